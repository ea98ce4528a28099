"""The table builder on synthetic scores and generations: layout, mean ± std over training runs, paper numbers,
the hierarchical bootstrap against hand-computed cases, the standard-error line, partial and missing rows, the
teacher quality gate."""
import math

import pytest

from conftest import REPO
from repro import grid, tables
from repro.io import write_json, write_jsonl
from repro.validation import load_config

PROMPTS = ["p1", "p2", "p3", "p4"]


def _split(line: str) -> list[str]:
    """Markdown row -> [pair, method, Dolly, SelfInst, VicunaEval, S-NI, UnNI, Avg, Runs, Paper Avg, delta,
    interval]."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture
def config(tmp_path):
    return small_grid(tmp_path)


def small_grid(tmp_path):
    """The default grid with two divergences, two training seeds and two evaluation seeds, results in tmp_path."""
    config = load_config(REPO / "config" / "config.yaml")
    config["results_dir"] = str(tmp_path)
    config["divergences"] = ["kl", "js"]
    config["training"]["seeds"] = [10, 20]
    config["evaluation"]["seeds"] = [10, 20]
    return config


def _write_run(config, run, base: float, dev: float | None = None, per_example=None):
    """scores.json and generations of a fake finished run; Rouge-L of example i is ``base + i`` unless given (the
    same for both sampling seeds)."""
    folder = grid.run_dir(config, run)
    values = per_example or [base + i for i in range(len(PROMPTS))]
    mean = sum(values) / len(values)
    sets = {}
    for t in grid.TEST_SETS:
        for seed in (10, 20):
            write_jsonl(folder / "generations" / f"{t}_seed{seed}.jsonl",
                        [{"prompt": p, "prediction": "x", "seed": seed, "rougeL": v} for p, v in zip(PROMPTS, values)])
        sets[t] = {"mean": mean, "std": 0.5, "per_seed": {"10": mean, "20": mean}, "n": len(PROMPTS)}
    write_json(grid.scores_file(config, run), {"cell": run.run_id, "test_sets": sets,
                                               "avg": {"mean": mean, "std": 0.25},
                                               "best_dev_rougeL": base if dev is None else dev})


def _write_cell(config, cell, base: float, dev: float | None = None, per_example=None, shift: float = 0.0):
    """Every run of a row; the run with the second training seed ``shift`` points higher on every example."""
    for k, run in enumerate(grid.cell_runs(config, cell)):
        values = per_example or [base + i for i in range(len(PROMPTS))]
        _write_run(config, run, base, dev, [v + k * shift for v in values])


def test_hierarchical_bootstrap_against_hand_computed_cases():
    # constant prompts, runs with Avg 1 and 3 against runs at 0: the mean of two runs drawn with replacement is
    # 1, 2 or 3 with probabilities 1/4, 1/2, 1/4, so the 95% percentile interval is [1, 3] around 2
    a = [{"x": [1.0, 1.0]}, {"x": [3.0, 3.0]}]
    b = [{"x": [0.0, 0.0]}, {"x": [0.0, 0.0]}]
    result = tables.hierarchical_bootstrap(a, b, replicates=4000)
    assert result["delta"] == 2.0 and (result["low"], result["high"]) == (1.0, 3.0) and result["runs"] == (2, 2)
    # one run each, prompts 1 and 0 against 0 and 0: two prompts drawn with replacement give 0, 0.5 or 1
    one = tables.hierarchical_bootstrap([{"x": [1.0, 0.0]}], [{"x": [0.0, 0.0]}], replicates=4000)
    assert one["delta"] == 0.5 and (one["low"], one["high"]) == (0.0, 1.0)
    # the prompts are drawn once for both sides: identical per-prompt scores give exactly 0, however spread
    same = tables.hierarchical_bootstrap([{"x": [1.0, 5.0, 9.0]}], [{"x": [1.0, 5.0, 9.0]}], replicates=500)
    assert (same["delta"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    # a run's Avg is the mean over test sets of its mean over prompts
    two = tables.hierarchical_bootstrap([{"x": [2.0], "y": [4.0, 4.0, 4.0]}], [{"x": [0.0], "y": [0.0, 0.0, 0.0]}])
    assert (two["delta"], two["low"], two["high"]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError, match="same test sets and prompts"):
        tables.hierarchical_bootstrap([{"x": [1.0]}], [{"x": [1.0, 2.0]}])


def test_run_standard_error_by_hand(config):
    run = grid.find_run(config, "gpt2", "sft", 10)
    _write_run(config, run, 0.0, per_example=[0.0, 2.0, 0.0, 2.0])
    # every test set: per-prompt means 0, 2, 0, 2 -> sample variance 4/3, over 4 prompts 1/3; five sets: sqrt(5/3)/5
    assert tables.run_standard_error(config, run) == pytest.approx(math.sqrt(5 / 3) / 5)


def test_tables_layout_runs_paper_numbers_and_intervals(config):
    missing = grid.Cell("llama", "dskd", divergence="js")
    partial = grid.Cell("llama", "kd", divergence="kl")
    for cell in grid.cells(config):
        if cell == missing:
            continue
        if cell == partial:
            _write_run(config, grid.cell_runs(config, cell)[0], 20.0)
        elif cell.method == "dskd":  # DSKD one point above KD on every example, a second run one point higher
            _write_cell(config, cell, 20.0, per_example=[21.0, 22.0, 23.0, 24.0], shift=1.0)
        elif cell.role == "teacher":
            _write_cell(config, cell, 40.0)
        else:
            _write_cell(config, cell, 20.0)
    paths = tables.write_tables(config)
    assert [p.name for p in paths] == [f"table{n}.{ext}" for n in (1, 2, 3) for ext in ("md", "tex", "csv")]
    t1 = paths[0].read_text()
    lines = t1.splitlines()
    assert lines[2] == ("| Pair | Method | Dolly | SelfInst | VicunaEval | S-NI | UnNI | Avg | Runs | Paper Avg | "
                        "Δ vs KD | 95% interval |")
    rows = [_split(line) for line in lines if line.startswith("| gpt2_teacher")]
    assert [r[1] for r in rows] == ["Teacher (SFT)", "SFT", "KD (KL)", "KD (JS)", "KD w/ DSKD (KL)",
                                    "KD w/ DSKD (JS)"]
    teacher, kd_js, dskd_js = rows[0], rows[3], rows[-1]
    assert teacher[7] == "41.50 ± 0.25" and teacher[8] == "1"  # one teacher run: its spread over sampling seeds
    # DSKD runs: Avg 22.5 and 23.5 -> mean 23.00, sample std 0.71; KD: 21.5 twice
    assert dskd_js[2] == "23.00 ± 0.71" and dskd_js[8] == "2" and dskd_js[9] == "18.37" and dskd_js[10] == "+1.50"
    low, high = (float(v) for v in dskd_js[11].strip("[]").split(","))
    assert 1.0 <= low < 1.5 < high <= 2.0  # the runs differ by 1: resampling runs moves the mean by up to 0.5
    assert kd_js[9] == "16.98" and kd_js[10] == ""  # KD (JS): the paper's number, no comparison with itself
    assert "Standard error from the test prompts and sampling seeds alone (no training noise)" in t1
    assert "of a row's Avg (the mean over its runs) median" in t1 and "of one run's Avg median" in t1
    cross = [_split(line)[1] for line in lines if line.startswith("| qwen_teacher")]
    assert cross == ["Teacher (SFT)", "SeqKD", "MinED", "ULD", "DSKD-CMA (KL)", "DSKD-CMA (JS)"]
    assert "Student space only" not in t1 and "WARNING" not in t1
    # a missing row stays in the table, marked, and is listed; a partial row is shown over its finished runs
    t2 = paths[3].read_text()
    missing_row = next(line for line in t2.splitlines() if "KD w/ DSKD (JS)" in line and "llama2" in line)
    assert missing_row.count("missing") == 6
    assert "Missing cells (no scores yet): llama/dskd-js" in t2
    partial_row = _split(next(line for line in t2.splitlines() if "| KD (KL)" in line and "llama2" in line))
    assert partial_row[8] == "1 of 2" and "llama/kd-kl (1 of 2 runs)" in t2
    # Table 3: per divergence, the three spaces, each compared with KD
    t3 = [_split(line) for line in paths[6].read_text().splitlines() if line.startswith("| gpt2_teacher")]
    assert [r[1] for r in t3] == ["Different spaces (KD) (KL)", "Student space only (KL)", "Dual space (DSKD) (KL)",
                                  "Different spaces (KD) (JS)", "Student space only (JS)", "Dual space (DSKD) (JS)"]
    assert t3[1][10] == "+0.00" and t3[1][11] == "[+0.00, +0.00]" and t3[2][10] == "+1.50"
    tex = paths[1].read_text()
    assert r"\begin{tabular}" in tex and r"KD w/ DSKD (JS)" in tex and r"23.00 $\pm$ 0.71" in tex
    csv_lines = paths[2].read_text().splitlines()
    assert len(csv_lines) == 1 + len(grid.table_cells(config, 1))
    for field in ("delta_vs_kd", "delta_low", "delta_high", "runs", "run_se", "row_se", "paper_avg"):
        assert field in csv_lines[0].split(",")
    assert "p_value" not in csv_lines[0]


def test_checkpoint_agreement_line(config):
    cells = [grid.Cell("gpt2", "sft"), grid.Cell("gpt2", "kd", divergence="kl")]
    for cell in cells:
        for k, run in enumerate(grid.cell_runs(config, cell)):
            _write_run(config, run, 20.0)
            # the runs' check seed picks the same epoch in 3 of the 4 runs
            write_json(grid.train_summary_file(config, run),
                       {"best_epoch": 3, "best_epoch_by_check_seed": {"20": 3 if (cell, k) != (cells[1], 1) else 2}})
    assert tables.checkpoint_agreement(config, cells) == {"same": 3, "runs": 4, "seeds": ["20"]}
    text = tables.to_markdown(config, tables.collect(config, 1), 1)
    assert "is also the best by check seed(s) 20 in 3 of 4 runs" in text
    assert tables.checkpoint_agreement(config, [grid.Cell("llama", "sft")]) is None


def test_runs_with_training_warnings_are_listed_under_their_table(config, caplog):
    run = grid.find_run(config, "gpt2", "kd-kl", 20)
    _write_run(config, run, 20.0)
    write_json(grid.train_summary_file(config, run), {"best_epoch": 1, "warnings": ["the training loss rose"]})
    tables.write_tables(config)
    t1 = (grid.results_dir(config) / "tables" / "table1.md").read_text()
    assert "**Training warning (!), run gpt2/kd-kl/seed20: the training loss rose**" in t1
    # the row is marked in the table; the other rows are not
    marked = [line.split(" | ")[1] for line in t1.splitlines() if line.startswith("| ") and " (!) | " in line]
    assert marked == ["KD (KL) (!)"], marked
    assert "run gpt2/kd-kl/seed20: the training loss rose" in caplog.text  # logged once (no stderr print)
    assert "Training warning" not in (grid.results_dir(config) / "tables" / "table2.md").read_text()


def test_teacher_gate_uses_the_student_sft_of_the_same_student(config, caplog):
    for cell in grid.cells(config):
        _write_cell(config, cell, 20.0, dev=5.0 if cell.id == "qwen_gpt2/teacher" else None)
    tables.write_tables(config)
    t1 = (grid.results_dir(config) / "tables" / "table1.md").read_text()
    assert ("WARNING: the teacher of pair 'qwen_gpt2' (qwen_teacher) does not beat the student SFT baseline "
            "(gpt2/sft) on the dev set: dev Rouge-L 5.00 <= 20.00") in t1
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("the teacher of pair 'qwen_gpt2' (qwen_teacher) does not beat") for m in logged), logged


def test_tables_by_hand_from_partial_results(config, tmp_path):
    """``python -m repro.tables`` builds tables from whatever has finished."""
    from repro.schema import load_yaml

    _write_run(config, grid.find_run(config, "gpt2", "sft", 10), 20.0)
    path = tmp_path / "c.yaml"
    raw = load_yaml(REPO / "config" / "config.yaml")
    raw["results_dir"] = str(tmp_path)
    import yaml

    path.write_text(yaml.safe_dump(raw))
    tables.main([str(path)])
    t1 = (tmp_path / "tables" / "table1.md").read_text()
    assert "| gpt2_teacher -> gpt2_student | SFT | 21.50 ± 0.50" in t1 and "gpt2/teacher" in t1
    assert "gpt2/sft (1 of 3 runs)" in t1  # the default config trains every student row with three seeds


def test_standard_errors_by_hand(config, monkeypatch):
    """sqrt(sum_t var_t / n_t) / T: set a has variance 100 over 3 prompts, set b 12 over 4; a row averages each
    prompt over its runs first (here the two runs' prompt scores cancel out: no prompt-to-prompt spread left)."""
    import math

    one = {"a": [10.0, 20.0, 30.0], "b": [0.0, 0.0, 6.0, 6.0]}
    other = {"a": [30.0, 20.0, 10.0], "b": [6.0, 6.0, 0.0, 0.0]}
    assert tables.standard_error(one) == pytest.approx(math.sqrt(100 / 3 + 12 / 4) / 2)
    runs = grid.cell_runs(config, grid.Cell("gpt2", "sft"))[:2]
    monkeypatch.setattr(tables, "per_prompt", lambda config, run: one if run == runs[0] else other)
    assert tables.row_standard_error(config, runs) == pytest.approx(0.0)
    assert tables.row_standard_error(config, runs[:1]) == pytest.approx(tables.standard_error(one))
    monkeypatch.setattr(tables, "per_prompt", lambda config, run: None)
    assert tables.row_standard_error(config, runs) is None
