"""Aggregate finished cells into the paper's tables (PAPER.md section 5): one row per cell, the five test sets and
their average, mean over evaluation seeds (standard deviation in the CSV)."""
from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

from . import grid
from .io import read_json, write_text


def collect(config: dict, table: int) -> list[dict]:
    """Rows of ``table``: one per cell of the pairs assigned to it, in grid order. A missing scores file is an error
    naming the cell and file."""
    rows = []
    for cell in grid.cells(config):
        pair = config["pairs"][cell.pair]
        if pair["table"] != table:
            continue
        path = grid.scores_file(config, cell)
        if not path.exists():
            raise FileNotFoundError(f"cell {cell.id} has no scores yet: {path} is missing")
        scores = read_json(path)
        row = {"pair": cell.pair, "teacher": pair["teacher"], "student": pair["student"], "row": cell.title,
               "cell": cell.id}
        for t in grid.TEST_SETS:
            row[t] = scores["test_sets"][t]["mean"]
            row[f"{t}_std"] = scores["test_sets"][t]["std"]
        row["avg"] = scores["avg"]["mean"]
        row["avg_std"] = scores["avg"]["std"]
        row["dev"] = scores["best_dev_rougeL"]
        rows.append(row)
    return rows


def teacher_warnings(rows: list[dict]) -> list[str]:
    """The teacher quality gate: one warning per pair whose SFT teacher does not beat the student SFT row on the
    dev set (best dev Rouge-L of each); such a teacher has nothing to distil, and its rows mean little."""
    warnings = []
    for pair in dict.fromkeys(r["pair"] for r in rows):
        by_cell = {r["cell"]: r for r in rows if r["pair"] == pair}
        teacher, sft = by_cell.get(f"{pair}/teacher"), by_cell.get(f"{pair}/sft")
        if teacher and sft and teacher["dev"] <= sft["dev"]:
            warnings.append(f"WARNING: the teacher of pair {pair!r} ({teacher['teacher']}) does not beat the student "
                            f"SFT baseline on the dev set: dev Rouge-L {teacher['dev']:.2f} <= {sft['dev']:.2f}")
    return warnings


def to_markdown(rows: list[dict], title: str) -> str:
    head = ["Pair", "Method"] + [grid.TEST_SET_TITLES[t] for t in grid.TEST_SETS] + ["Avg"]
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pair = f"{r['teacher']} -> {r['student']}"
        cells = [f"{r[t]:.2f}" for t in grid.TEST_SETS] + [f"{r['avg']:.2f}"]
        lines.append("| " + " | ".join([pair, r["row"]] + cells) + " |")
    lines += ["", "Rouge-L (x100), mean over evaluation seeds; Avg is the mean of the five test-set means."]
    lines += [f"\n**{w}**" for w in teacher_warnings(rows)]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["cell"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(config: dict) -> list[Path]:
    """Write ``table{n}.md`` and ``table{n}.csv`` for every table of the config; return the paths."""
    out = grid.results_dir(config) / "tables"
    written = []
    for n in grid.tables(config):
        rows = collect(config, n)
        for warning in teacher_warnings(rows):
            logging.getLogger("repro").warning(warning)
            print(warning, file=sys.stderr)
        md, csv_path = out / f"table{n}.md", out / f"table{n}.csv"
        write_text(md, to_markdown(rows, f"Table {n}"))
        write_text(csv_path, to_csv(rows))
        written += [md, csv_path]
    return written
