"""Aggregate finished runs into the paper's Tables 1-3 (PAPER.md section 5) as Markdown, LaTeX and CSV.

Rows are methods, columns Dolly, SelfInst, VicunaEval, S-NI, UnNI and Avg. A student row is trained once per
training seed (``training.seeds``, one run each); each run's score on a test set is its mean Rouge-L over the
evaluation (sampling) seeds, and the table shows ``mean ± std`` over the row's runs (the teacher row: one run, its
std over sampling seeds). Where PAPER.md reports a number for a row, it is shown beside ours (``Paper Avg``). Every
"w/ DSKD" row (and, in Table 3, every row) is compared with the KD row of the same pair and divergence: the
difference of their mean Avg over training runs, with a 95% interval from a hierarchical bootstrap whose first
resampling unit is the training run (then the prompts of each test set), so training noise, sampling noise and the
finite test sets are all in it. Under each table: the standard error of one run's Avg from its prompts and sampling
seeds alone (what larger test sets would shrink). A row whose runs are not all finished is shown with the runs it
has and marked; a row with none is kept as a row marked missing, never dropped.
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import statistics
from pathlib import Path

import numpy as np

from . import grid, layout, names
from .io import read_json, read_jsonl, write_text
from .metrics import mean_sample_std
from .validation import load_config

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
BOOTSTRAP = 10_000  # hierarchical bootstrap replicates of every DSKD-vs-KD interval
LEVEL = 0.95


def _comparison_cell(cell: grid.Cell, table: int) -> grid.Cell | None:
    """The KD row a row is compared with: "w/ DSKD" rows in Tables 1-2, every non-KD row in Table 3."""
    if cell.divergence is None or cell.method == "kd":
        return None
    if table == 3 or cell.method == "dskd":
        return grid.Cell(cell.pair, "kd", divergence=cell.divergence)
    return None


def finished_runs(config: dict, cell: grid.Cell) -> list[tuple[grid.Cell, dict]]:
    """(run, scores) of every run of a row whose scores file exists, in seed order."""
    out = []
    for run in grid.cell_runs(config, cell):
        path = grid.scores_file(config, run)
        if path.exists():
            out.append((run, read_json(path)))
    return out


def collect(config: dict, table: int) -> list[dict]:
    """The rows of ``table`` in order: mean ± std over the finished runs of each row (``runs`` of ``runs_planned``;
    status ``done``, ``partial`` or ``missing``)."""
    rows = []
    for cell in grid.table_cells(config, table):
        pair = config["pairs"][cell.pair]
        planned = len(grid.cell_runs(config, cell))
        row = {"table": table, "pair": cell.pair, "teacher": pair["teacher"], "student": pair["student"],
               "row": grid.row_title(cell, table), "cell": cell.id, "method": cell.method,
               "divergence": cell.divergence, "status": "missing", "runs": 0, "runs_planned": planned}
        finished = finished_runs(config, cell)
        if finished:
            row["status"] = "done" if len(finished) == planned else "partial"
            row["runs"] = len(finished)
            row["training_seeds"] = " ".join(str(run.seed) for run, _ in finished)
            scores = [s for _, s in finished]
            for t in names.TEST_SETS:
                row[t], row[f"{t}_std"] = _run_spread([s["test_sets"][t] for s in scores])
            row["avg"], row["avg_std"] = _run_spread([s["avg"] for s in scores])
            row["dev"] = mean_sample_std([s["best_dev_rougeL"] for s in scores])[0]
            row["seeds"] = len(next(iter(scores[0]["test_sets"].values()))["per_seed"])
            prompts = [per_prompt(config, run) for run, _ in finished]  # read once for both errors
            row["run_se"] = max(map(standard_error, prompts)) if None not in prompts else None
            row["row_se"] = pooled_standard_error(prompts)
        row["paper_avg"] = PAPER_AVG.get((cell.pair, cell.method, cell.divergence))
        other = _comparison_cell(cell, table)
        if other is not None:
            row["compared_with"] = other.id
            test = compare(config, cell, other) if finished else None
            row["delta_vs_kd"], row["delta_low"], row["delta_high"], row["runs_compared"] = (
                (test["delta"], test["low"], test["high"], f"{test['runs'][0]} vs {test['runs'][1]}")
                if test else (None, None, None, None))
        rows.append(row)
    return rows


def _run_spread(entries: list[dict]) -> tuple[float, float]:
    """Mean ± std of a row over its runs; a single run keeps its spread over sampling seeds."""
    if len(entries) == 1:
        return entries[0]["mean"], entries[0]["std"]
    return mean_sample_std([e["mean"] for e in entries])


def per_prompt(config: dict, run: grid.Cell) -> dict[str, list[float]] | None:
    """Rouge-L of every test prompt of a run, averaged over its sampling seeds: {test set: [per prompt, in file
    order]}; None when a generations file is missing."""
    scores = read_json(grid.scores_file(config, run))
    out = {}
    run_dir = grid.run_dir(config, run)
    for t in names.TEST_SETS:
        seeds = list(scores["test_sets"][t]["per_seed"])
        columns = []
        for seed in seeds:
            path = layout.generation_file(run_dir, t, seed)
            if not path.exists():
                return None
            columns.append([r["rougeL"] for r in read_jsonl(path)])
        if len({len(c) for c in columns}) != 1:
            raise ValueError(f"{layout.generations_dir(run_dir)}: the {t} generations of the sampling seeds {seeds} "
                             "differ in length")
        out[t] = [sum(values) / len(values) for values in zip(*columns)]
    return out


def standard_error(prompts: dict[str, list[float]]) -> float:
    """Standard error of the Avg of per-prompt scores ``{test set: [per prompt]}`` from the prompts: each set's
    scores as a sample of prompts, ``sqrt(sum_t var_t / n_t) / T`` over the T test sets."""
    variance = sum(statistics.variance(v) / len(v) if len(v) > 1 else 0.0 for v in prompts.values())
    return math.sqrt(variance) / len(prompts)


def run_standard_error(config: dict, run: grid.Cell) -> float | None:
    """Standard error of one run's Avg from its test prompts and sampling seeds (its per-prompt scores, mean over
    sampling seeds); None when a generations file is missing."""
    prompts = per_prompt(config, run)
    return None if prompts is None else standard_error(prompts)


def row_standard_error(config: dict, runs: list[grid.Cell]) -> float | None:
    """Standard error of a row's Avg, the mean over its training runs, from the test prompts and sampling seeds:
    each prompt's score averaged over the runs (and seeds), which all see the same prompts; the training runs
    themselves are held fixed (their spread is the row's ± and the intervals' first level). None when a
    generations file is missing."""
    return pooled_standard_error([per_prompt(config, run) for run in runs])


def pooled_standard_error(prompts: list[dict[str, list[float]] | None]) -> float | None:
    """``standard_error`` of the per-prompt scores of several runs averaged prompt by prompt (None when a run's
    scores are missing)."""
    if not prompts or None in prompts:
        return None
    return standard_error({t: [sum(v) / len(v) for v in zip(*(p[t] for p in prompts))] for t in prompts[0]})


def compare(config: dict, cell: grid.Cell, other: grid.Cell) -> dict | None:
    """Difference of the mean Avg of row ``cell`` and row ``other`` over their finished runs, with its 95% interval
    (``hierarchical_bootstrap``). None when either row has no finished run with generations."""
    a = [p for run, _ in finished_runs(config, cell) if (p := per_prompt(config, run)) is not None]
    b = [p for run, _ in finished_runs(config, other) if (p := per_prompt(config, run)) is not None]
    if not a or not b:
        return None
    return hierarchical_bootstrap(a, b)


def hierarchical_bootstrap(a: list[dict[str, list[float]]], b: list[dict[str, list[float]]],
                           replicates: int = BOOTSTRAP, level: float = LEVEL, seed: int = 0) -> dict:
    """Mean Avg of runs ``a`` minus that of runs ``b`` and a percentile interval at ``level``.

    ``a``, ``b``: one entry per training run, {test set: per-prompt scores}; a run's Avg is the mean over test sets
    of its mean over prompts. Each replicate draws the runs of each side with replacement (the training run is the
    first resampling unit; the two sides independently), then the prompts of each test set with replacement, the
    same draw for both sides (the prompts are shared), and takes the difference of the mean Avg. Returns ``{"delta",
    "low", "high", "runs": (len(a), len(b)), "replicates"}``."""
    sets = list(a[0])
    for side in (a, b):
        for run in side:
            if list(run) != sets or any(len(run[t]) != len(a[0][t]) for t in sets):
                raise ValueError("hierarchical_bootstrap: every run needs the same test sets and prompts")
    rng = np.random.default_rng(seed)
    draws = {t: rng.integers(0, len(a[0][t]), size=(replicates, len(a[0][t]))) for t in sets}

    def run_avgs(side) -> np.ndarray:  # [runs, replicates]: each run's Avg on every replicate's prompts
        return np.mean([np.asarray([run[t] for run in side])[:, draws[t]].mean(-1) for t in sets], axis=0)

    def side_mean(side) -> np.ndarray:  # [replicates]: mean over the replicate's draw of runs
        picks = rng.integers(0, len(side), size=(replicates, len(side)))
        return np.take_along_axis(run_avgs(side).T, picks, axis=1).mean(-1)

    def avg(run) -> float:
        return float(np.mean([np.mean(run[t]) for t in sets]))

    replicate = side_mean(a) - side_mean(b)
    tail = (1 - level) / 2
    low, high = np.quantile(replicate, [tail, 1 - tail])
    delta = float(np.mean([avg(r) for r in a]) - np.mean([avg(r) for r in b]))
    return {"delta": delta, "low": float(low), "high": float(high), "runs": (len(a), len(b)),
            "replicates": replicates}


def train_summaries(config: dict, cells: list[grid.Cell]) -> list[tuple[grid.Cell, dict]]:
    """``(run, train_summary.json)`` of every finished run of ``cells`` that has its training summary."""
    out = []
    for cell in cells:
        for run, _ in finished_runs(config, cell):
            path = grid.train_summary_file(config, run)
            if path.exists():
                out.append((run, read_json(path)))
    return out


def run_warnings(config: dict, cells: list[grid.Cell]) -> list[str]:
    """The training warnings of the finished runs of ``cells`` (``repro.training.training_warnings``, recorded in
    each run's train_summary.json), one line per run."""
    return [f"run {run.run_id}: {w}" for run, summary in train_summaries(config, cells)
            for w in summary.get("warnings", [])]


def warned_cells(config: dict, cells: list[grid.Cell]) -> set[str]:
    """The ids of the cells among ``cells`` with at least one run that has a training warning."""
    return {run.id for run, summary in train_summaries(config, cells) if summary.get("warnings")}


WARNED = " (!)"  # after the method of a row one of whose runs has a training warning (listed under the table)


def teacher_warnings(config: dict, rows: list[dict]) -> list[str]:
    """The teacher quality gate: one warning per pair whose SFT teacher does not beat the student SFT on the dev
    set (best dev Rouge-L; the student's mean over its runs; the student SFT cell may belong to another pair with
    the same student)."""
    warnings = []
    for row in rows:
        if not row["cell"].endswith("/teacher") or row["status"] == "missing":
            continue
        sft = grid.sft_cell(config, row["pair"])
        finished = finished_runs(config, sft) if sft is not None else []
        if not finished:
            continue
        sft_dev = mean_sample_std([s["best_dev_rougeL"] for _, s in finished])[0]
        if row["dev"] <= sft_dev:
            warnings.append(f"the teacher of pair {row['pair']!r} ({row['teacher']}) does not beat the "
                            f"student SFT baseline ({sft.id}) on the dev set: dev Rouge-L {row['dev']:.2f} <= "
                            f"{sft_dev:.2f}")
    return warnings


def _fmt(mean, std=None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _cells(row: dict) -> list[str]:
    if row["status"] == "missing":
        values = ["missing"] * (len(names.TEST_SETS) + 1)
    else:
        values = [_fmt(row[t], row[f"{t}_std"]) for t in names.TEST_SETS] + [_fmt(row["avg"], row["avg_std"])]
    runs = f"{row['runs']}" if row["status"] != "partial" else f"{row['runs']} of {row['runs_planned']}"
    values += [runs, _fmt(row["paper_avg"])]
    if "compared_with" in row and row.get("delta_vs_kd") is not None:
        values += [f"{row['delta_vs_kd']:+.2f}", f"[{row['delta_low']:+.2f}, {row['delta_high']:+.2f}]"]
    elif "compared_with" in row:
        values += ["-", "-"]
    else:
        values += ["", ""]
    return values


HEADER = (["Pair", "Method"] + [names.TEST_SET_TITLES[t] for t in names.TEST_SETS]
          + ["Avg", "Runs", "Paper Avg", "Δ vs KD", "95% interval"])


def caption(table: int) -> str:
    what = {1: "GPT-2 students", 2: "TinyLLaMA students", 3: "ablation: KD in different spaces, in the student "
                                                               "space only, in both spaces (DSKD)"}[table]
    return (f"Table {table} ({what}). Rouge-L (x100). Each training run's score on a test set is its mean over the "
            f"evaluation seeds; a row shows mean ± std over its training runs (Runs; one run: the std over "
            f"evaluation seeds), Avg the mean of the five test sets. Paper Avg: the number PAPER.md reports for the "
            f"row, where it gives one. Δ vs KD: the row's mean Avg minus that of the KD row of the same pair and "
            f"divergence; 95% interval: hierarchical bootstrap ({BOOTSTRAP:,} replicates) over training runs, then "
            f"the prompts of each test set, so it holds training noise, sampling noise and the finite test sets. "
            f"With few runs per row, a bootstrap interval is narrower than the true one; an interval that includes 0 "
            f"establishes no difference.")


def checkpoint_agreement(config: dict, cells: list[grid.Cell]) -> dict | None:
    """How often the dev seeds of the checkpoint choice and each check seed (``evaluation.dev_check_seeds``) pick
    the same epoch, over the finished runs of ``cells``: ``{"same": k, "runs": n, "seeds": [...]}`` (a run counts
    once per check seed); None without check seeds or finished runs."""
    same = total = 0
    seeds: set[str] = set()
    for _, summary in train_summaries(config, cells):
        for seed, epoch in summary.get("best_epoch_by_check_seed", {}).items():
            seeds.add(seed)
            same += epoch == summary["best_epoch"]
            total += 1
    return {"same": same, "runs": total, "seeds": sorted(seeds, key=int)} if total else None


def standard_error_line(rows: list[dict]) -> str | None:
    """The line under a table: the standard errors of a row's Avg (the mean over its runs) and of one run's Avg
    from test prompts and sampling seeds alone."""
    rows = [r for r in rows if r.get("run_se") is not None and r.get("row_se") is not None]
    if not rows:
        return None

    def spread(key):
        return f"median {statistics.median(r[key] for r in rows):.2f}, largest {max(r[key] for r in rows):.2f}"

    return (f"Standard error from the test prompts and sampling seeds alone (no training noise), over the rows of "
            f"this table: of a row's Avg (the mean over its runs) {spread('row_se')} points; of one run's Avg "
            f"{spread('run_se')} (the default miniature's test sets are sized for at most 0.50 for every row).")


def to_markdown(config: dict, rows: list[dict], table: int) -> str:
    lines = [f"## Table {table}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    warned = warned_cells(config, grid.table_cells(config, table))
    for r in rows:
        method = r["row"] + (WARNED if r["cell"] in warned else "")
        lines.append("| " + " | ".join([f"{r['teacher']} -> {r['student']}", method] + _cells(r)) + " |")
    lines += ["", caption(table)]
    if (line := standard_error_line(rows)) is not None:
        lines += ["", line]
    agreement = checkpoint_agreement(config, [c for c in grid.table_cells(config, table)])
    if agreement is not None:
        dev = ", ".join(map(str, config["evaluation"]["dev_seeds"]))
        lines += ["", f"Checkpoint choice: the best dev epoch by dev seed(s) {dev} is also the best by check seed(s) "
                      f"{', '.join(agreement['seeds'])} in {agreement['same']} of {agreement['runs']} runs."]
    if table in PAPER_NOTES:
        lines += ["", PAPER_NOTES[table]]
    missing = [r["cell"] for r in rows if r["status"] == "missing"]
    if missing:
        lines += ["", f"**Missing cells (no scores yet): {', '.join(missing)}.**"]
    partial = [f"{r['cell']} ({r['runs']} of {r['runs_planned']} runs)" for r in rows if r["status"] == "partial"]
    if partial:
        lines += ["", f"**Rows with unfinished runs (shown over the finished ones): {', '.join(partial)}.**"]
    lines += [f"\n**WARNING: {w}**" for w in teacher_warnings(config, rows)]
    lines += [f"\n**Training warning{WARNED}, {w}**" for w in run_warnings(config, grid.table_cells(config, table))]
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
    quality and training warnings go into the Markdown table and to the ``repro`` logger (the make_tables notebook
    shows them, ``python -m repro.tables`` prints them to stderr)."""
    out = layout.tables_dir(grid.results_dir(config))
    written = []
    for n in grid.tables(config):
        rows = collect(config, n)
        for warning in teacher_warnings(config, rows) + run_warnings(config, grid.table_cells(config, n)):
            logging.getLogger("repro").warning(warning)
        for ext, text in (("md", to_markdown(config, rows, n)), ("tex", to_latex(rows, n)), ("csv", to_csv(rows))):
            write_text(out / f"table{n}.{ext}", text)
            written.append(out / f"table{n}.{ext}")
    return written


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.tables CONFIG``: build the tables from whatever cells have finished (missing ones marked)."""
    parser = argparse.ArgumentParser(prog="python -m repro.tables", description=main.__doc__)
    parser.add_argument("config", help="workflow configuration YAML")
    logging.basicConfig(format="%(levelname)s: %(message)s")  # the tables' warnings, to stderr
    for path in write_tables(load_config(parser.parse_args(argv).config)):
        print(path)


if __name__ == "__main__":
    main()
