"""The cost of a finished run by job kind, from Snakemake's benchmark files and the cells' training summaries.

Every job writes its wall time to ``results/benchmarks/**.tsv`` (Snakemake ``benchmark:``; a training run's at
``<rule>/<pair>/<cell>/seed<s>.tsv``); every run's ``train_summary.json`` holds the seconds its training loop took
(including the per-epoch dev sampling). A run job's remaining seconds are its kernel start, imports, model loading,
test sampling and rendering. Prints the job-seconds
by kind (the teacher rows, the student rows by method, the teacher-state caches, data, figures, tables, report), the
training and remaining seconds of the cell jobs, and the total.

    python scripts/grid_cost.py results
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def job_seconds(path: Path) -> float:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return sum(float(r["s"]) for r in rows[-1:])  # the last measurement: a rerun replaces the job's time


def cost(results: Path) -> dict:
    benchmarks = results / "benchmarks"
    if not benchmarks.is_dir():
        raise SystemExit(f"{benchmarks}: no benchmark files (run the workflow first)")
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "training": 0.0})
    for path in sorted(benchmarks.rglob("*.tsv")):
        rule = path.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        seconds = job_seconds(path)
        kind = rule
        training = 0.0
        if rule in ("run_cell", "train_cell", "evaluate_cell"):
            _, pair, cell, seed = path.relative_to(benchmarks).with_suffix("").parts
            kind = f"{rule}: " + ("teacher" if cell == "teacher" else cell.split("-")[0])
            summary = results / "runs" / pair / cell / seed / "train_summary.json"
            if rule != "evaluate_cell" and summary.exists():
                training = json.loads(summary.read_text())["train_seconds"]
        entry = kinds[kind]
        entry["jobs"] += 1
        entry["seconds"] += seconds
        entry["training"] += training
    return dict(sorted(kinds.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="results", help="the run's results folder")
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    kinds = cost(Path(args.results))
    print(f"{'job kind':<34}{'jobs':>5}{'job-s':>9}{'training':>10}{'rest':>8}")
    for kind, e in kinds.items():
        rest = e["seconds"] - e["training"] if e["training"] else float("nan")
        print(f"{kind:<34}{e['jobs']:>5}{e['seconds']:>9.1f}{e['training']:>10.1f}{rest:>8.1f}")
    total = sum(e["seconds"] for e in kinds.values())
    print(f"{'total':<34}{sum(e['jobs'] for e in kinds.values()):>5}{total:>9.1f}")
    if args.out:
        from repro.io import write_json

        write_json(args.out, {"kinds": kinds, "total_seconds": total})


if __name__ == "__main__":
    main()
