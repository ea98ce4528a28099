"""The documentation's results blocks, written from a finished run's tables (``results/tables/table{1,2,3}.csv``,
``claims.md``), so README.md and docs/results.md quote the run instead of retyping it.

The summary (README.md): one Markdown table per same-vocabulary pair (Avg Rouge-L of every KD, DSKD and ablation row
by divergence, mean ± std over training runs, and DSKD's difference from KD with its 95% interval), then the teachers,
the student SFT rows and the cross-vocabulary rows, then the count of the paper's claims by verdict. The claims
(docs/results.md): the claims table (``claims.md``) as the run wrote it, without its heading. Every number as the
tables print it. Each block sits between its two markers (``<!-- readme_results.py: summary -->`` or ``claims``,
then ``<!-- /readme_results.py -->``); nothing outside them is touched.

    python scripts/readme_results.py results/tables            # print both blocks
    python scripts/readme_results.py results/tables --write    # write them into README.md and docs/results.md
    python scripts/readme_results.py results/tables --check    # exit 1, naming each file whose block differs
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from repro.io import write_text

ROWS = {"kd": "KD", "dskd": "KD w/ DSKD", "dskd_student_space": "Student space only (Table 3)"}
CROSS = {"seqkd": "SeqKD", "mined": "MinED", "uld": "ULD", "dskd_cma": "DSKD-CMA"}
REPO = Path(__file__).resolve().parent.parent
PAGES = {"summary": REPO / "README.md", "claims": REPO / "docs" / "results.md"}  # which block goes where
END = "<!-- /readme_results.py -->"
COUNTS = re.compile(r"^\**(\d+ comparisons: [^*]+?)\**$", re.M)  # claims.md's count line, bold or not


def start_marker(name: str) -> str:
    return f"<!-- readme_results.py: {name} -->"


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


def blocks(folder: Path) -> dict[str, str | None]:
    """``{"summary": ..., "claims": ...}`` of a run's tables folder; the claims are None without a ``claims.md``."""
    rows = read_rows(folder)
    if not rows:
        raise SystemExit(f"{folder}: no table1.csv, table2.csv or table3.csv")
    text = summary(rows)
    path = folder / "claims.md"
    if not path.exists():
        return {"summary": text, "claims": None}
    claims = path.read_text(encoding="utf-8").split("\n", 2)[2].strip()  # without its heading
    if count := COUNTS.search(claims):
        text += f"\n\nThe paper's claims in this run: {count.group(1)}"
    return {"summary": text, "claims": claims}


def replace_block(text: str, name: str, body: str, path: Path) -> str:
    """``text`` with the block ``name`` (between its markers) replaced by ``body``."""
    start = start_marker(name)
    if text.count(start) != 1:
        raise SystemExit(f"{path}: expected the line {start} once, found it {text.count(start)} times")
    head, rest = text.split(start, 1)
    if END not in rest:
        raise SystemExit(f"{path}: no {END} after {start}")
    return f"{head}{start}\n\n{body}\n\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="?", default="results/tables", help="folder with table{1,2,3}.csv")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the blocks into their pages")
    mode.add_argument("--check", action="store_true", help="exit 1 where a page's block differs from the tables")
    parser.add_argument("--readme", type=Path, default=PAGES["summary"], help="the page of the summary block")
    parser.add_argument("--results-page", type=Path, default=PAGES["claims"], help="the page of the claims block")
    args = parser.parse_args(argv)
    folder = Path(args.tables)
    found = blocks(folder)
    if not (args.write or args.check):
        print(found["summary"])
        if found["claims"] is not None:
            print("\n" + found["claims"])
        return
    if found["claims"] is None:
        raise SystemExit(f"{folder / 'claims.md'}: missing (the workflow's make_claims step writes it)")
    pages = {name: (path, path.read_text(encoding="utf-8"))
             for name, path in {"summary": args.readme, "claims": args.results_page}.items()}
    changed = {name: (path, new) for name, (path, text) in pages.items()  # every marker checked before any write
               if (new := replace_block(text, name, found[name], path)) != text}
    if args.check and changed:
        raise SystemExit("\n".join(f"{path}: the {name} block differs from {folder} (write it with --write)"
                                    for name, (path, _) in changed.items()))
    for name, (path, text) in pages.items():
        if args.write and name in changed:
            write_text(path, changed[name][1])
        print(f"{path}: {name} block {'written' if name in changed else 'up to date'}")


if __name__ == "__main__":
    main()
