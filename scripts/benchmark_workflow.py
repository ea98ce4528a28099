"""Wall time of one workflow run with the jobs' run: blocks in threads (the default profile's force-use-threads)
against a Snakemake process spawned per job, side by side.

Each mode runs the same config in a fresh folder of its own, the modes alternating over the rounds; the run
without threads uses the default profile's settings but for force-use-threads. Prints the wall time of each run,
the median per mode, the jobs run and the difference per job.

    python scripts/benchmark_workflow.py --config config/micro.yaml --rounds 1
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def run_once(config: Path, threads: bool, cores: int) -> tuple[float, int]:
    """One workflow run of ``config`` in a fresh folder: (wall seconds, jobs run)."""
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    profile["force-use-threads"] = threads
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "profile").mkdir()
        (Path(folder) / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
        command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", str(cores),
                   "--configfile", str(config.resolve()), "--directory", folder,
                   "--workflow-profile", str(Path(folder) / "profile")]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"the run failed:\n{done.stderr[-3000:]}")
        jobs = re.findall(r"(\d+) of (\d+) steps \(100%\) done", done.stderr)
        return seconds, int(jobs[-1][1]) if jobs else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "micro.yaml")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)
    times: dict[bool, list[float]] = {True: [], False: []}
    jobs = 0
    for _ in range(args.rounds):
        for threads in (True, False):
            seconds, jobs = run_once(args.config, threads, args.cores)
            times[threads].append(seconds)
            print(f"{'threads' if threads else 'spawned':<8} {seconds:8.1f} s  ({jobs} jobs)", flush=True)
    threaded, spawned = statistics.median(times[True]), statistics.median(times[False])
    print(f"median: threads {threaded:.1f} s, spawned {spawned:.1f} s, ratio {threaded / spawned:.2f}; "
          f"{(spawned - threaded) / max(jobs, 1):.2f} s less per job ({jobs} jobs, {args.cores} cores)")


if __name__ == "__main__":
    main()
