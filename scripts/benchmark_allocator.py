"""glibc's mmap threshold fixed by every job against glibc's dynamic default, side by side, as ratios.

Every job fixes glibc's mmap threshold when it starts (``repro.memory.fix_mmap_threshold``, 1 MiB), so that what a
step frees goes back to the system and the job's resident memory is what it holds. This measures what that costs in
time and what it saves in memory: the jobs of ``scripts/memory_check.py`` (every job kind of the paper grid, on
one-layer models at ``--widths``, the real tokenizers and Dolly rows, each job in a fresh process as the workflow
runs it) run in rounds, once with the threshold fixed and once with ``REPRO_MMAP_THRESHOLD=glibc`` (glibc's dynamic
default), the order alternating from round to round. For each job: the median wall seconds and peak memory growth
of each variant, and their ratios (fixed / default).

    python scripts/benchmark_allocator.py --tokenizers ../shared/tokenizers --data ../shared/data/minillm \
        --widths rehearsal --rounds 2 --out allocator.json

One thread per job; the models are built once, before the first round (not timed). At ``--widths rehearsal`` one
round of every job takes about 10 minutes on one core of this machine and several GB of memory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

VARIANTS = {"fixed": None, "glibc default": "glibc"}  # REPRO_MMAP_THRESHOLD of each variant (None: unset)


def run_round(args, variant: str, out: Path) -> list[dict]:
    """One run of the selected jobs by scripts/memory_check.py with ``variant``'s allocator setting."""
    env = {k: v for k, v in os.environ.items() if k != "REPRO_MMAP_THRESHOLD"}
    if VARIANTS[variant] is not None:
        env["REPRO_MMAP_THRESHOLD"] = VARIANTS[variant]
    env.setdefault("TQDM_DISABLE", "1")
    command = [sys.executable, str(HERE / "memory_check.py"), "--tokenizers", str(args.tokenizers),
               "--data", str(args.data), "--widths", args.widths, "--root", str(args.root), "--out", str(out)]
    command += ["--jobs", *args.jobs] if args.jobs else []
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizers", type=Path, required=True, help="folder with gpt2, llama2, mistral, qwen1.5")
    parser.add_argument("--data", type=Path, required=True, help="processed data folder (dolly/dev.jsonl, test.jsonl)")
    parser.add_argument("--widths", default="rehearsal", help="memory_check.py's widths (small, rehearsal)")
    parser.add_argument("--jobs", nargs="+", help="only these jobs of memory_check.py (their inputs run too)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", type=Path, default=Path("benchmark-allocator"), help="working folder")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    from repro.io import write_json

    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
            for variant in order:
                results = run_round(args, variant, Path(tmp) / f"{round_}-{len(runs)}.json")
                for r in results:
                    threshold = r["record"].get("mmap_threshold")
                    if (threshold is None) != (VARIANTS[variant] is not None):
                        raise SystemExit(f"job {r['job']!r} ran with mmap threshold {threshold} in the "
                                         f"{variant!r} variant")
                    runs.setdefault(r["job"], {}).setdefault(variant, []).append(
                        {"seconds": r["record"]["seconds"], "measured": r["measured"], "predicted": r["predicted"]})
                print(f"round {round_ + 1}/{args.rounds}: {variant} done", file=sys.stderr, flush=True)

    rows = []
    print(f"{'job':24} {'s fixed':>8} {'s glibc':>8} {'time':>6} {'MB fixed':>9} {'MB glibc':>9} {'memory':>6} "
          f"{'pred. MB':>8}")
    for job, variants in runs.items():
        fixed, default = variants["fixed"], variants["glibc default"]
        assert len(default) == len(fixed)
        row = {"job": job,
               **{f"seconds {v}": statistics.median(r["seconds"] for r in variants[v]) for v in VARIANTS},
               **{f"measured {v}": statistics.median(r["measured"] for r in variants[v]) for v in VARIANTS},
               "predicted": fixed[0]["predicted"], "rounds": [{v: variants[v][i] for v in VARIANTS}
                                                               for i in range(len(fixed))]}
        row["time ratio"] = row["seconds fixed"] / row["seconds glibc default"]
        row["memory ratio"] = row["measured fixed"] / row["measured glibc default"]
        rows.append(row)
        print(f"{job:24} {row['seconds fixed']:8.1f} {row['seconds glibc default']:8.1f} {row['time ratio']:6.2f} "
              f"{row['measured fixed'] / 1e6:9.0f} {row['measured glibc default'] / 1e6:9.0f} "
              f"{row['memory ratio']:6.2f} {row['predicted'] / 1e6:8.0f}")
    total = {v: sum(r[f"seconds {v}"] for r in rows) for v in VARIANTS}
    print(f"{'all jobs':24} {total['fixed']:8.1f} {total['glibc default']:8.1f} "
          f"{total['fixed'] / total['glibc default']:6.2f}")
    result = {"widths": args.widths, "rounds": args.rounds, "jobs": rows, "total seconds": total,
              "total time ratio": total["fixed"] / total["glibc default"]}
    if args.out:
        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
