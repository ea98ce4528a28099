"""Recovery before a run: what a crashed run of the same folder left behind, released when no run is going.

A run killed with ``kill -9`` (or a power cut, a closed terminal) leaves Snakemake's lock in ``.snakemake/locks/``,
so the next run refuses to start, and the temporary files of the atomic writes it was making
(``.<name>.<random>.tmp`` folders, ``repro.io.atomic_path``) beside their targets. ``make repro`` runs
``python -m repro.recover`` first: when no Snakemake process is working in the folder, the lock is stale and is
removed, and so are the temporaries; Snakemake's ``rerun-incomplete`` (the default profile) then redoes the jobs
that had not finished, and a training run resumes from its last saved epoch. While another run of the folder is
going nothing is touched (Snakemake then refuses the second run, as it should). Whether a run is going is read
from ``/proc`` (Linux); where there is none, nothing is removed and the message says what to do.

Usage: ``python -m repro.recover [--directory DIR] [--config FILE]`` (the config gives ``results_dir``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from .config import results_dir_problem
from .schema import load_yaml

LOCKS = Path(".snakemake") / "locks"


def _is_snakemake(argv: list[str]) -> bool:
    """Whether a command line is Snakemake's (the ``snakemake`` script or ``python -m snakemake``)."""
    if not argv:
        return False
    if any(Path(a).name == "snakemake" for a in argv[:2]):
        return True
    return any(a == "-m" and b == "snakemake" for a, b in zip(argv, argv[1:]))


def running_snakemake(directory: str | os.PathLike, proc: str | os.PathLike = "/proc") -> list[int] | None:
    """The ids of the Snakemake processes working in ``directory`` (their current directory, which Snakemake's
    ``--directory`` sets), or None where processes cannot be listed (no ``/proc``)."""
    proc = Path(proc)
    if not (proc / "self").exists():
        return None
    target = Path(directory).resolve()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone meanwhile, or another user's
            continue
        if _is_snakemake([a.decode(errors="replace") for a in argv if a]) and cwd == target:
            found.append(int(entry.name))
    return sorted(found)


def leftover_temporaries(results: Path) -> list[Path]:
    """The temporary folders of atomic writes (``repro.io.atomic_path``) under ``results``."""
    if not results.is_dir():
        return []
    return sorted(p for p in results.rglob(".*.tmp") if p.is_dir())


def recover(directory: str | os.PathLike = ".", results: str | os.PathLike = "results") -> list[str]:
    """Release what a crashed run of ``directory`` left (stale lock, temporaries under ``results``, relative to
    ``directory``) when no Snakemake process works there; return one line per thing done or left."""
    directory = Path(directory)
    locks = sorted(p for p in (directory / LOCKS).glob("*") if p.is_file()) if (directory / LOCKS).is_dir() else []
    temporaries = leftover_temporaries(directory / results)
    if not locks and not temporaries:
        return []
    running = running_snakemake(directory)
    if running is None:
        return [f"{directory / LOCKS}: a lock is present and whether a run is going cannot be told here (no /proc); "
                f"if none is, run `make unlock`, then the same command again"] if locks else []
    if running:
        return [f"{directory}: a Snakemake run is going (process {', '.join(map(str, running))}); nothing released"]
    messages = []
    if locks:
        for lock in locks:
            lock.unlink(missing_ok=True)
        messages.append(f"{directory / LOCKS}: a stale lock of an interrupted run was released ({len(locks)} lock "
                        f"files); its unfinished jobs run again")
    if temporaries:
        for tmp in temporaries:
            shutil.rmtree(tmp, ignore_errors=True)
        messages.append(f"{directory / results}: {len(temporaries)} temporary folders of unfinished writes removed")
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", default=".", help="the workflow's working folder (Snakemake's --directory)")
    parser.add_argument("--config", help="the run's config file (for its results_dir; default: results)")
    args = parser.parse_args(argv)
    config = load_yaml(args.config) if args.config else {}
    config.setdefault("results_dir", "results")
    if problem := results_dir_problem(config, args.directory):  # never clear temporaries outside the run's folder
        print(f"{args.config}: {problem}; nothing was released", file=sys.stderr)
        return 2
    for line in recover(args.directory, config["results_dir"]):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
