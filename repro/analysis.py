"""The figure steps of the workflow: from the config and the finished cells to ``results/analysis`` (JSON, CSV,
Markdown) and ``results/figures`` (PNG and PDF, named after the paper's numbering). The figure notebooks call these
and display what they return.

- ``make_figure1``: the toy simulation (PAPER.md section 2), needs nothing but the config.
- ``make_figure2``: the LLM judge of DSKD vs KD (PAPER.md section 4), from the cells' generations; without a judge
  configured it records why and draws nothing (the report says so).
- ``make_figure3``: the representation distance of SFT, KD and DSKD students to their teacher (PAPER.md section 4).
- ``make_training_curves``: one figure per table row from the training logs of its runs.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

from . import grid, layout, names
from .io import read_jsonl, write_json, write_jsonl, write_text
from .judge import build_items, judge_status, run_judge, summarize
from .metrics import mean_sample_std
from .settings import JudgeSettings, ToySettings
from .tables import to_csv
from .toy import distance_rows, run_toy


def figure1_outputs(config: dict) -> dict[str, Path]:
    d = grid.analysis_dir(config)
    return {"results": d / "figure1_toy_simulation.json", "table_md": d / "figure1_distances.md",
            "table_csv": d / "figure1_distances.csv"}


def figure2_outputs(config: dict) -> dict[str, Path]:
    d = grid.analysis_dir(config)
    return {"results": d / "figure2_judge.json", "verdicts": d / "figure2_judge_verdicts.jsonl",
            "cache": d / "judge_cache"}


def figure3_outputs(config: dict) -> dict[str, Path]:
    d = grid.analysis_dir(config)
    return {"results": d / "figure3_representation_distance.json",
            "table_md": d / "figure3_representation_distance.md"}


def make_figure1(config: dict, threads: int = 1, progress: bool = True) -> dict:
    """Run the toy simulation for every divergence of the config; write its results, the distance table and
    Figure 1. Returns ``{"results", "table" (Markdown), "figure" (matplotlib figure), "files"}``."""
    from .figures import plot_toy, save_figure, toy_table

    settings = ToySettings(**grid.figure_settings(config, "toy"), threads=threads)
    results = run_toy(list(config["divergences"]), settings, progress=progress)
    out = figure1_outputs(config)
    rows = distance_rows(results)
    table = toy_table(rows)
    write_json(out["results"], results)
    write_text(out["table_md"], table)
    write_text(out["table_csv"], to_csv(rows))
    fig = plot_toy(results)
    files = save_figure(fig, grid.figures_dir(config) / grid.FIGURE_STEMS[1])
    return {"results": results, "table": table, "figure": fig, "files": files}


def make_figure3(config: dict, threads: int = 1) -> dict:
    """Representation distances of every same-vocabulary pair's SFT, KD and DSKD students to its teacher on the
    first training examples, for every training run of each row; writes the values, a summary table and Figure 3.
    Returns ``{"values", "values_by_run", "table", "figure", "files"}`` (``values``: {pair: {student: {distance:
    [per example, every run's in turn]}}}; ``values_by_run``: {pair: {student: {seed: {distance: [per example]}}}})."""
    from .data import load_examples
    from .figures import plot_representation, save_figure
    from .representation import pair_distances

    settings = grid.figure_settings(config, "representation")
    students = grid.representation_students(config)
    if not students:
        raise ValueError("Figure 3 needs a pair with SFT, KD and DSKD cells with the divergence "
                         f"figures.representation.divergence={settings['divergence']!r}; this config has none")
    rows = load_examples(grid.data_dir(config) / "train.jsonl")
    values, by_run = {}, {}
    for pair, cells in students.items():
        teacher = grid.checkpoint_dir(config, grid.teacher_run(config, cells["KD"]))
        checkpoints = {(label, run.seed): grid.checkpoint_dir(config, run) for label, c in cells.items()
                       for run in grid.cell_runs(config, c)}
        measured = pair_distances(teacher, {f"{label} seed {seed}": path for (label, seed), path
                                            in checkpoints.items()}, rows, settings["n_examples"],
                                  settings["max_chars"], threads)
        by_run[pair] = {label: {str(seed): measured[f"{label} seed {seed}"] for (other, seed) in checkpoints
                                if other == label} for label in cells}
        values[pair] = {label: {kind: [v for run in runs.values() for v in run[kind]]
                                for kind in ("cosine", "inner_product")} for label, runs in by_run[pair].items()}
    lines = ["| Pair | Student | Runs | Cosine distance | Inner-product distance | Examples per run |",
             "|---|---|---|---|---|---|"]
    for pair, per_student in by_run.items():
        for label, runs in per_student.items():
            cells_text = []
            for kind in ("cosine", "inner_product"):
                mean, spread = mean_sample_std([statistics.fmean(run[kind]) for run in runs.values()])
                cells_text.append(f"{mean:.4f} ± {spread:.4f}")
            n = len(next(iter(runs.values()))["cosine"])
            lines.append(f"| {pair} | {label} | {len(runs)} | {cells_text[0]} | {cells_text[1]} | {n} |")
    lines += ["", "Mean distance over each run's examples, then mean ± std over the row's training runs."]
    table = "\n".join(lines) + "\n"
    out = figure3_outputs(config)
    runs = {p: {k: [r.run_id for r in grid.cell_runs(config, c)] for k, c in cs.items()} for p, cs in students.items()}
    write_json(out["results"], {"settings": settings, "runs": runs, "values": values, "values_by_run": by_run})
    write_text(out["table_md"], table)
    fig = plot_representation({_pair_title(config, p): v for p, v in values.items()})
    files = save_figure(fig, grid.figures_dir(config) / grid.FIGURE_STEMS[3])
    return {"values": values, "values_by_run": by_run, "table": table, "figure": fig, "files": files}


def _pair_title(config: dict, pair: str) -> str:
    spec = config["pairs"][pair]
    return f"{pair} ({spec['teacher']} -> {spec['student']})"


def _comparison_title(dskd: grid.Cell) -> str:
    return f"{dskd.pair}, {names.DIVERGENCE_TITLES.get(dskd.divergence, dskd.divergence)}"


def generation_file(config: dict, run: grid.Cell, test_set: str, seed: int) -> Path:
    """The generations of one run on a test set with sampling seed ``seed``."""
    return layout.generation_file(grid.run_dir(config, run), test_set, seed)


def make_figure2(config: dict, environ=None, client=None) -> dict:
    """Judge DSKD against KD (same pair and divergence) on the configured test set's seed-``generation_seed``
    generations, when a judge is configured; write the verdicts, the win rates and Figure 2.

    Always writes ``figure2_judge.json`` with ``status`` (``{"configured", "reason"}``), so the report can say why
    there is no Figure 2; the API key is read from the environment variable the config names, never written.
    Returns ``{"status", "summary", "table", "figure", "files"}`` (summary, table and figure None without a judge).
    """
    from .figures import judge_table, plot_judge, save_figure

    settings = JudgeSettings(**grid.figure_settings(config, "judge"))
    status = judge_status(settings, environ)
    out = figure2_outputs(config)
    figure_paths = grid.figure_files(config, 2)
    # everything in the settings is public: the key's variable name, never the key
    result = {"status": status, "settings": asdict(settings), "summary": None, "comparisons": []}
    if not status["configured"]:
        for path in figure_paths:  # a figure from an earlier judged run would contradict the status
            path.unlink(missing_ok=True)
        write_json(out["results"], result)
        return {"status": status, "summary": None, "table": None, "figure": None, "files": []}
    items = []
    titles = {}
    for dskd, kd in grid.judge_comparisons(config):
        title = _comparison_title(dskd)
        titles[title] = (dskd.id, kd.id)
        first = read_jsonl(generation_file(config, grid.first_run(config, dskd), settings.test_set,
                                           settings.generation_seed))
        second = read_jsonl(generation_file(config, grid.first_run(config, kd), settings.test_set,
                                            settings.generation_seed))
        items += build_items(first, second, settings, "DSKD", "KD", title)
    records = run_judge(items, settings, out["cache"], client=client, environ=environ)
    summary = summarize(records, "DSKD", "KD")
    write_jsonl(out["verdicts"], records)
    result.update(summary=summary, comparisons=[{"title": t, "dskd": a, "kd": b} for t, (a, b) in titles.items()])
    write_json(out["results"], result)
    fig = plot_judge(summary)
    files = save_figure(fig, grid.figures_dir(config) / grid.FIGURE_STEMS[2])
    return {"status": status, "summary": summary, "table": judge_table(summary), "figure": fig, "files": files}


def make_training_curves(config: dict) -> list[Path]:
    """One PNG per table row with a training log: loss terms, diagnostics and dev Rouge-L of each of its training
    runs. Returns the files written."""
    import matplotlib.pyplot as plt

    from .figures import plot_training_curves, save_figure

    files = []
    for cell in grid.cells(config):
        logs = {f"seed {run.seed}": read_jsonl(layout.train_log_file(grid.run_dir(config, run)))
                for run in grid.cell_runs(config, cell)}
        fig = plot_training_curves(logs, cell.id)
        files += save_figure(fig, grid.training_curve_file(config, cell).with_suffix(""), formats=("png",))
        plt.close(fig)
    return files


def training_curve_files(config: dict) -> list[Path]:
    return [grid.training_curve_file(config, cell) for cell in grid.cells(config)]
