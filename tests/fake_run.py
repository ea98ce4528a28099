"""A finished run of the default grid without training: every run's scores and generations written by hand (each
row's level and its training runs' spread drawn from a seeded generator, so the claims come out mixed: some hold,
some do not, most are undecided), then the workflow's own steps on them: the tables, Figure 1 (a tiny toy
simulation), Figure 3's results file, Figure 2's status without a judge, the claims, the claims' plots, the
training curves (one drawn, copied to every row) and a stand-in for every rendered notebook. What the report and the
claims' figures are tested on, at the default grid's size."""
from __future__ import annotations

import random
import shutil

import matplotlib.pyplot as plt
from test_tables import PROMPTS, _write_run

from conftest import REPO
from repro import analysis, claims, figures, grid, tables
from repro.io import read_csv, write_json, write_text
from repro.report import notebooks
from repro.validation import load_config


def fake_default_run(tmp_path, divergences: list[str] | None = None) -> dict:
    """The default config with results in ``tmp_path/results``, every step up to the report done; returns it."""
    config = load_config(REPO / "config" / "config.yaml")
    config["results_dir"] = str(tmp_path / "results")
    if divergences is not None:
        config["divergences"] = divergences
    config["figures"]["toy"] = {"n_vectors": 5, "n_classes": 20, "steps": 3, "repetitions": 2}
    rng = random.Random(29)
    for cell in grid.cells(config):
        level = 40.0 if cell.role == "teacher" else 20.0 + rng.uniform(-2.0, 2.0)
        for run in grid.cell_runs(config, cell):
            per_prompt = [level + 3.0 * i + rng.gauss(0.0, 1.0) for i in range(len(PROMPTS))]
            _write_run(config, run, level, per_example=per_prompt)
    tables.write_tables(config)
    analysis.make_figure1(config, progress=False)
    students = grid.representation_students(config)
    by_run = {pair: {label: {str(run.seed): {"cosine": [0.1 + rng.random() / 10 for _ in range(4)],
                                             "inner_product": [1.0 + rng.random() for _ in range(4)]}
                             for run in grid.cell_runs(config, cell)} for label, cell in cells.items()}
              for pair, cells in students.items()}
    values = {pair: {label: {kind: [v for run in runs.values() for v in run[kind]] for kind in ("cosine",
                                                                                                 "inner_product")}
                     for label, runs in per_student.items()} for pair, per_student in by_run.items()}
    write_json(analysis.figure3_outputs(config)["results"], {"values": values, "values_by_run": by_run})
    write_text(analysis.figure3_outputs(config)["table_md"], "| Pair | Student |\n|---|---|\n| gpt2 | KD |\n")
    figures.save_figure(figures.plot_representation(values), grid.figures_dir(config) / grid.FIGURE_STEMS[3])
    claims.write_claims(config)
    fig = figures.plot_claims(claims.read_claims(claims.claims_files(config)["csv"]))
    figures.save_figure(fig, grid.claims_figure_files(config)[0].with_suffix(""))
    for table in grid.difference_tables(config):
        fig = figures.plot_table_differences(read_csv(grid.table_file(config, table, "csv")), table,
                                             claims.PAPER_DSKD_GAIN.get(table))
        figures.save_figure(fig, grid.difference_figure_files(config, table)[0].with_suffix(""))
    log = [{"step": i, "epoch": 1, "lr": 1e-3, "grad_norm": 1.0, "loss": 3.0 / i} for i in range(1, 6)]
    log.append({"event": "epoch_end", "epoch": 1, "dev_rougeL": 12.0})
    curve = tmp_path / "curve"
    figures.save_figure(figures.plot_training_curves({"seed 10": log}, "row"), curve, formats=("png",))
    for cell in grid.cells(config):
        path = grid.training_curve_file(config, cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(curve.with_suffix(".png"), path)
    analysis.make_figure2(config, environ={})
    for label, path in notebooks(config):
        write_text(path, f"<!DOCTYPE html><title>{label}</title><p>{label}</p>\n")
    plt.close("all")
    return config
