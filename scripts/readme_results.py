"""Print the README's summary of a finished run from its tables (``results/tables/table{1,2,3}.csv``, claims.md).

One Markdown table per same-vocabulary pair (Avg Rouge-L of every KD, DSKD and ablation row by divergence, mean ±
std over training runs, and DSKD's difference from KD with its 95% interval), then the teachers, the student SFT
rows and the cross-vocabulary rows, then the claims table (``claims.md``) as the run wrote it; every number as the
tables print it, so the README quotes the run instead of retyping it.

    python scripts/readme_results.py results/tables
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

ROWS = {"kd": "KD", "dskd": "KD w/ DSKD", "dskd_student_space": "Student space only (Table 3)"}
CROSS = {"seqkd": "SeqKD", "mined": "MinED", "uld": "ULD", "dskd_cma": "DSKD-CMA"}


def read_rows(folder: Path) -> list[dict]:
    rows = []
    for table in (1, 2, 3):
        path = folder / f"table{table}.csv"
        if path.exists():
            with path.open(newline="", encoding="utf-8") as f:
                rows += list(csv.DictReader(f))
    return rows


def _avg(row: dict) -> str:
    if row["status"] == "missing":
        return "missing"
    std = f" ± {float(row['avg_std']):.2f}" if row.get("avg_std") not in (None, "") else ""
    partial = f" ({row['runs']} of {row['runs_planned']} runs)" if row["status"] == "partial" else ""
    return f"{float(row['avg']):.2f}{std}{partial}"


def _delta(row: dict) -> str:
    if row.get("delta_vs_kd") in (None, ""):
        return "-"
    return (f"{float(row['delta_vs_kd']):+.2f} [{float(row['delta_low']):+.2f}, "
            f"{float(row['delta_high']):+.2f}]")


def summary(rows: list[dict]) -> str:
    divergences = list(dict.fromkeys(r["divergence"] for r in rows if r["method"] == "kd"))
    lines = []
    pairs = list(dict.fromkeys(r["pair"] for r in rows if r["method"] == "kd"))
    for pair in pairs:
        lines += [f"| Table {rows_of(rows, pair)[0]['table']}: {pair} pair | "
                  + " | ".join(d.upper() for d in divergences) + " |",
                  "|---|" + "---|" * len(divergences)]
        for method, title in ROWS.items():
            found = {r["divergence"]: r for r in reversed(rows_of(rows, pair, tables=("1", "2", "3")))
                     if r["method"] == method}  # a row of Tables 1-2 wins over its Table 3 repeat
            if found:
                lines.append(f"| {title} | " + " | ".join(_avg(found[d]) if d in found else "-"
                                                         for d in divergences) + " |")
            if found and method != "kd":
                lines.append(f"| {title} - KD [95% interval] | " + " | ".join(
                    _delta(found[d]) if d in found else "-" for d in divergences) + " |")
        lines.append("")
    by_pair: dict[str, list[str]] = {}
    for r in rows:
        if r["table"] in ("1", "2") and r["method"] == "sft":
            by_pair.setdefault(r["pair"], []).append(f"{r['row']} {_avg(r)}")
    lines.append("SFT rows: " + "; ".join(f"{pair}: {', '.join(items)}" for pair, items in by_pair.items()) + ".")
    for pair in dict.fromkeys(r["pair"] for r in rows if r["method"] in CROSS):
        parts = []
        for method, title in CROSS.items():
            found = [r for r in rows_of(rows, pair) if r["method"] == method and r["status"] == "done"]
            if len(found) == 1:
                parts.append(f"{title} {_avg(found[0])}")
            elif found:
                values = sorted(found, key=lambda r: float(r["avg"]))
                parts.append(f"{title} {float(values[0]['avg']):.2f}-{float(values[-1]['avg']):.2f} "
                             f"({values[0]['divergence'].upper()} lowest, {values[-1]['divergence'].upper()} "
                             f"highest)")
        lines.append(f"Different vocabularies, {pair}: " + ", ".join(parts) + ".")
    return "\n".join(lines)


def rows_of(rows: list[dict], pair: str, tables: tuple[str, ...] = ("1", "2")) -> list[dict]:
    return [r for r in rows if r["pair"] == pair and r["table"] in tables]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="?", default="results/tables", help="folder with table{1,2,3}.csv")
    args = parser.parse_args(argv)
    rows = read_rows(Path(args.tables))
    if not rows:
        raise SystemExit(f"{args.tables}: no table1.csv, table2.csv or table3.csv")
    print(summary(rows))
    claims = Path(args.tables) / "claims.md"
    if claims.exists():
        print("\n" + claims.read_text(encoding="utf-8").split("\n", 2)[2].strip())  # without its heading


if __name__ == "__main__":
    main()
