"""Aggregate finished cells into the paper's Tables 1-3 (PAPER.md section 5) as Markdown, LaTeX and CSV.

Rows are methods, columns Dolly, SelfInst, VicunaEval, S-NI, UnNI and Avg, each ``mean +- std`` over the
evaluation seeds. Where PAPER.md reports a number for a row, it is shown beside ours (``Paper Avg``). Every
"w/ DSKD" row (and, in Table 3, every row) is compared with the KD row of the same pair and divergence by a paired
sign-flip permutation test over (test set, prompt, seed) triples: the mean Rouge-L difference and a two-sided p-value.
A cell without scores is kept as a row marked missing, never dropped.
"""
from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

from . import grid
from .io import read_json, read_jsonl, write_text

# Avg Rouge-L that PAPER.md section 5 reports, keyed by (pair, method, divergence); pair keys as in config/*.yaml.
PAPER_AVG = {
    ("gpt2", "kd", "js"): 16.98,
    ("gpt2", "dskd", "js"): 18.37,
    ("llama", "kd", "akl"): 23.30,
    ("llama", "dskd", "akl"): 26.65,
    ("mistral_tinyllama", "dskd_cma", "akl"): 26.99,
    ("qwen_gpt2", "seqkd", None): 16.13,
    ("qwen_gpt2", "mined", None): 17.46,
    ("qwen_gpt2", "uld", None): 17.11,
}
PAPER_NOTES = {
    1: "PAPER.md also reports DSKD-CMA at Avg 18.02 for Qwen1.5 -> GPT-2 without naming its divergence, and DSKD "
       "gains of +0.43 to +1.39 Avg over KD across divergences for GPT-2.",
    2: "PAPER.md reports DSKD gains of +0.82 to +3.35 Avg over KD across divergences for TinyLLaMA; DSKD-CMA-AKL with "
       "Mistral is more than 5 points above MinED.",
}
PERMUTATIONS = 10_000


def _comparison_cell(cell: grid.Cell, table: int) -> grid.Cell | None:
    """The KD row a row is tested against: "w/ DSKD" rows in Tables 1-2, every non-KD row in Table 3."""
    if cell.divergence is None or cell.method == "kd":
        return None
    if table == 3 or cell.method == "dskd":
        return grid.Cell(cell.pair, "kd", divergence=cell.divergence)
    return None


def collect(config: dict, table: int) -> list[dict]:
    """The rows of ``table`` in order; a cell whose scores file is missing gives a row with status ``missing``."""
    rows = []
    for cell in grid.table_cells(config, table):
        pair = config["pairs"][cell.pair]
        row = {"table": table, "pair": cell.pair, "teacher": pair["teacher"], "student": pair["student"],
               "row": grid.row_title(cell, table), "cell": cell.id, "method": cell.method,
               "divergence": cell.divergence or "", "status": "missing"}
        path = grid.scores_file(config, cell)
        if path.exists():
            scores = read_json(path)
            row["status"] = "done"
            for t in grid.TEST_SETS:
                row[t], row[f"{t}_std"] = scores["test_sets"][t]["mean"], scores["test_sets"][t]["std"]
            row["avg"], row["avg_std"] = scores["avg"]["mean"], scores["avg"]["std"]
            row["dev"] = scores["best_dev_rougeL"]
            row["seeds"] = len(next(iter(scores["test_sets"].values()))["per_seed"])
        row["paper_avg"] = PAPER_AVG.get((cell.pair, cell.method, cell.divergence))
        other = _comparison_cell(cell, table)
        if other is not None:
            row["compared_with"] = other.id
            test = paired_test(config, cell, other) if row["status"] == "done" else None
            row["delta_vs_kd"], row["p_value"], row["pairs_tested"] = (
                (test["delta"], test["p"], test["n"]) if test else (None, None, None))
        rows.append(row)
    return rows


def _per_example(config: dict, cell: grid.Cell) -> dict[tuple, float] | None:
    """Rouge-L of every (test set, example index, seed) of a cell, from its saved generations; None if absent."""
    scores = read_json(grid.scores_file(config, cell))
    out = {}
    gen = grid.run_dir(config, cell) / "generations"
    for t in grid.TEST_SETS:
        for seed in scores["test_sets"][t]["per_seed"]:
            path = gen / f"{t}_seed{seed}.jsonl"
            if not path.exists():
                return None
            for i, r in enumerate(read_jsonl(path)):
                out[(t, i, str(seed), r["prompt"])] = r["rougeL"]
    return out


def paired_test(config: dict, cell: grid.Cell, other: grid.Cell) -> dict | None:
    """Mean Rouge-L difference ``cell - other`` over the (test set, prompt, seed) triples both have, and the
    two-sided p-value of a paired sign-flip permutation test (``PERMUTATIONS`` random sign patterns, fixed seed).
    None when ``other`` has no scores or generations yet."""
    if not grid.scores_file(config, other).exists():
        return None
    a, b = _per_example(config, cell), _per_example(config, other)
    if a is None or b is None:
        return None
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError(f"cells {cell.id} and {other.id} share no (test set, prompt, seed) to compare")
    return sign_flip_test([a[k] - b[k] for k in keys])


def sign_flip_test(diffs: list[float], permutations: int = PERMUTATIONS, seed: int = 0) -> dict:
    """Paired permutation test of mean(diffs) = 0: under the null every difference is equally likely positive or
    negative. Returns ``{"delta": mean, "p": two-sided p-value, "n": len(diffs)}`` (p with the +1 correction)."""
    import numpy as np

    d = np.asarray(diffs, dtype=np.float64)
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    extreme, done = 0, 0
    chunk = max(1, min(permutations, 2_000_000 // max(len(d), 1)))
    while done < permutations:
        k = min(chunk, permutations - done)
        signs = rng.integers(0, 2, size=(k, len(d)), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ d) / len(d) >= observed - 1e-12).sum())
        done += k
    return {"delta": float(d.mean()), "p": (extreme + 1) / (permutations + 1), "n": int(len(d))}


def teacher_warnings(config: dict, rows: list[dict]) -> list[str]:
    """The teacher quality gate: one warning per pair whose SFT teacher does not beat the student SFT on the dev
    set (best dev Rouge-L of each; the student SFT cell may belong to another pair with the same student)."""
    warnings = []
    for row in rows:
        if not row["cell"].endswith("/teacher") or row["status"] != "done":
            continue
        sft = grid.sft_cell(config, row["pair"])
        if sft is None or not grid.scores_file(config, sft).exists():
            continue
        sft_dev = read_json(grid.scores_file(config, sft))["best_dev_rougeL"]
        if row["dev"] <= sft_dev:
            warnings.append(f"WARNING: the teacher of pair {row['pair']!r} ({row['teacher']}) does not beat the "
                            f"student SFT baseline ({sft.id}) on the dev set: dev Rouge-L {row['dev']:.2f} <= "
                            f"{sft_dev:.2f}")
    return warnings


def _fmt(mean, std=None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _p(p) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _cells(row: dict) -> list[str]:
    if row["status"] == "missing":
        values = ["missing"] * (len(grid.TEST_SETS) + 1)
    else:
        values = [_fmt(row[t], row[f"{t}_std"]) for t in grid.TEST_SETS] + [_fmt(row["avg"], row["avg_std"])]
    values.append(_fmt(row["paper_avg"]))
    if "compared_with" in row:
        values += [f"{row['delta_vs_kd']:+.2f}" if row.get("delta_vs_kd") is not None else "-",
                   _p(row.get("p_value"))]
    else:
        values += ["", ""]
    return values


HEADER = (["Pair", "Method"] + [grid.TEST_SET_TITLES[t] for t in grid.TEST_SETS]
          + ["Avg", "Paper Avg", "Δ vs KD", "p"])


def caption(table: int) -> str:
    what = {1: "GPT-2 students", 2: "TinyLLaMA students", 3: "ablation: KD in different spaces, in the student "
                                                               "space only, in both spaces (DSKD)"}[table]
    return (f"Table {table} ({what}). Rouge-L (x100), mean ± std over evaluation seeds; Avg is the mean of the five "
            f"test-set means. Paper Avg: the number PAPER.md reports for the row, where it gives one. Δ vs KD and p: "
            f"mean paired difference from the KD row of the same pair and divergence over every (test set, prompt, "
            f"seed), and the two-sided p-value of a sign-flip permutation test ({PERMUTATIONS:,} permutations).")


def to_markdown(config: dict, rows: list[dict], table: int) -> str:
    lines = [f"## Table {table}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        lines.append("| " + " | ".join([f"{r['teacher']} -> {r['student']}", r["row"]] + _cells(r)) + " |")
    lines += ["", caption(table)]
    if table in PAPER_NOTES:
        lines += ["", PAPER_NOTES[table]]
    missing = [r["cell"] for r in rows if r["status"] == "missing"]
    if missing:
        lines += ["", f"**Missing cells (no scores yet): {', '.join(missing)}.**"]
    lines += [f"\n**{w}**" for w in teacher_warnings(config, rows)]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("->", r"$\rightarrow$"), ("<", r"$<$")):
        text = text.replace(a, b)
    return text


def to_latex(rows: list[dict], table: int) -> str:
    lines = [r"\begin{table*}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "c" * (len(HEADER) - 2) + "}",
             r"\toprule", " & ".join(_tex(h) for h in HEADER) + r" \\", r"\midrule"]
    previous = None
    for r in rows:
        pair = f"{r['teacher']} -> {r['student']}"
        if previous is not None and pair != previous:
            lines.append(r"\midrule")
        lines.append(" & ".join(_tex(v) for v in [pair if pair != previous else "", r["row"]] + _cells(r)) + r" \\")
        previous = pair
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(caption(table)) + "}",
              rf"\label{{tab:table{table}}}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["cell"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(config: dict) -> list[Path]:
    """Write ``table{n}.md``, ``.tex`` and ``.csv`` for every table of the config; return the paths. Teacher
    quality warnings go to the log and stderr as well as into the Markdown table."""
    out = grid.results_dir(config) / "tables"
    written = []
    for n in grid.tables(config):
        rows = collect(config, n)
        for warning in teacher_warnings(config, rows):
            logging.getLogger("repro").warning(warning)
            print(warning, file=sys.stderr)
        for ext, text in (("md", to_markdown(config, rows, n)), ("tex", to_latex(rows, n)), ("csv", to_csv(rows))):
            write_text(out / f"table{n}.{ext}", text)
            written.append(out / f"table{n}.{ext}")
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.tables CONFIG``: build the tables from whatever cells have finished (missing ones marked)."""
    import argparse

    from .config import load_config

    parser = argparse.ArgumentParser(prog="python -m repro.tables", description=main.__doc__)
    parser.add_argument("config", help="workflow configuration YAML")
    for path in write_tables(load_config(parser.parse_args(argv).config)):
        print(path)


if __name__ == "__main__":
    main()
