"""The table builder on synthetic scores and generations: layout, paper numbers, paired tests, missing cells,
the teacher quality gate."""
import pytest

from conftest import REPO
from repro import grid, tables
from repro.config import load_config
from repro.io import write_json, write_jsonl

PROMPTS = ["p1", "p2", "p3", "p4"]


def _split(line: str) -> list[str]:
    """Markdown row -> [pair, method, Dolly, SelfInst, VicunaEval, S-NI, UnNI, Avg, Paper Avg, delta, p]."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


@pytest.fixture
def config(tmp_path):
    config = load_config(REPO / "config" / "config.yaml")
    config["results_dir"] = str(tmp_path)
    config["divergences"] = ["kl", "js"]
    config["evaluation"]["seeds"] = [10, 20]
    return config


def _write_cell(config, cell, base: float, dev: float | None = None, per_example=None):
    """scores.json and generations of a fake finished cell; Rouge-L of example i is ``base + i`` unless given."""
    run = grid.run_dir(config, cell)
    sets = {}
    for t in grid.TEST_SETS:
        per_seed = {}
        for seed in (10, 20):
            values = per_example or [base + i for i in range(len(PROMPTS))]
            write_jsonl(run / "generations" / f"{t}_seed{seed}.jsonl",
                        [{"prompt": p, "prediction": "x", "seed": seed, "rougeL": v} for p, v in zip(PROMPTS, values)])
            per_seed[str(seed)] = sum(values) / len(values)
        sets[t] = {"mean": sum(per_seed.values()) / 2, "std": 0.5, "per_seed": per_seed, "n": len(PROMPTS)}
    write_json(grid.scores_file(config, cell), {"cell": cell.id, "test_sets": sets,
                                                "avg": {"mean": base + 1.5, "std": 0.25},
                                                "best_dev_rougeL": base if dev is None else dev})


def test_sign_flip_test():
    assert tables.sign_flip_test([1.0] * 30)["p"] < 0.001
    balanced = tables.sign_flip_test([1.0, -1.0] * 15)
    assert balanced["delta"] == 0 and balanced["p"] == 1.0
    small = tables.sign_flip_test([0.5, 0.4, -0.1], permutations=2000)
    assert 0.2 < small["p"] <= 1 and small["n"] == 3
    # exact two-sided p for 3 positive differences: 2 of the 8 sign patterns are as extreme
    assert tables.sign_flip_test([1.0, 1.0, 1.0], permutations=20000)["p"] == pytest.approx(0.25, abs=0.02)


def test_tables_layout_paper_numbers_and_paired_tests(config):
    cells = grid.cells(config)
    missing = grid.Cell("llama", "dskd", divergence="js")
    for k, cell in enumerate(cells):
        if cell == missing:
            continue
        if cell.method == "dskd":  # DSKD one point above KD on every example
            _write_cell(config, cell, 20.0, per_example=[21.0, 22.0, 23.0, 24.0])
        elif cell.role == "teacher":
            _write_cell(config, cell, 40.0)
        else:
            _write_cell(config, cell, 20.0)
    paths = tables.write_tables(config)
    assert [p.name for p in paths] == [f"table{n}.{ext}" for n in (1, 2, 3) for ext in ("md", "tex", "csv")]
    t1 = paths[0].read_text()
    lines = t1.splitlines()
    assert lines[2] == ("| Pair | Method | Dolly | SelfInst | VicunaEval | S-NI | UnNI | Avg | Paper Avg | Δ vs KD | "
                        "p |")
    rows = [_split(line) for line in lines if line.startswith("| gpt2_teacher")]
    assert [r[1] for r in rows] == ["Teacher (SFT)", "SFT", "KD (KL)", "KD (JS)", "KD w/ DSKD (KL)",
                                    "KD w/ DSKD (JS)"]
    dskd_js = rows[-1]
    assert dskd_js[2] == "22.50 ± 0.50" and dskd_js[8] == "18.37" and dskd_js[9] == "+1.00" and dskd_js[10] == "<0.001"
    assert rows[3][8] == "16.98" and rows[3][9] == ""  # KD (JS): the paper's number, no test against itself
    cross = [_split(line)[1] for line in lines if line.startswith("| qwen_teacher")]
    assert cross == ["Teacher (SFT)", "SeqKD", "MinED", "ULD", "DSKD-CMA (KL)", "DSKD-CMA (JS)"]
    assert "Student space only" not in t1 and "WARNING" not in t1
    # a missing cell stays in the table, marked, and is listed
    t2 = paths[3].read_text()
    missing_row = next(line for line in t2.splitlines() if "KD w/ DSKD (JS)" in line and "llama2" in line)
    assert missing_row.count("missing") == 6
    assert "Missing cells (no scores yet): llama/dskd-js" in t2
    # Table 3: per divergence, the three spaces, each tested against KD
    t3 = [_split(line) for line in paths[6].read_text().splitlines() if line.startswith("| gpt2_teacher")]
    assert [r[1] for r in t3] == ["Different spaces (KD) (KL)", "Student space only (KL)", "Dual space (DSKD) (KL)",
                                  "Different spaces (KD) (JS)", "Student space only (JS)", "Dual space (DSKD) (JS)"]
    assert t3[1][9] == "+0.00" and t3[1][10] == "1.000" and t3[2][9] == "+1.00"
    tex = paths[1].read_text()
    assert r"\begin{tabular}" in tex and r"KD w/ DSKD (JS)" in tex and r"22.50 $\pm$ 0.50" in tex
    csv_lines = paths[2].read_text().splitlines()
    assert len(csv_lines) == 1 + len(grid.table_cells(config, 1))
    assert "delta_vs_kd" in csv_lines[0] and "p_value" in csv_lines[0] and "paper_avg" in csv_lines[0]


def test_teacher_gate_uses_the_student_sft_of_the_same_student(config, capsys):
    for cell in grid.cells(config):
        _write_cell(config, cell, 20.0, dev=5.0 if cell.id == "qwen_gpt2/teacher" else None)
    tables.write_tables(config)
    t1 = (grid.results_dir(config) / "tables" / "table1.md").read_text()
    assert ("WARNING: the teacher of pair 'qwen_gpt2' (qwen_teacher) does not beat the student SFT baseline "
            "(gpt2/sft) on the dev set: dev Rouge-L 5.00 <= 20.00") in t1
    assert "WARNING: the teacher of pair 'qwen_gpt2'" in capsys.readouterr().err


def test_tables_by_hand_from_partial_results(config, tmp_path):
    """``python -m repro.tables`` builds tables from whatever has finished."""
    from repro.config import load_yaml

    _write_cell(config, grid.Cell("gpt2", "sft"), 20.0)
    path = tmp_path / "c.yaml"
    raw = load_yaml(REPO / "config" / "config.yaml")
    raw["results_dir"] = str(tmp_path)
    import yaml

    path.write_text(yaml.safe_dump(raw))
    tables.main([str(path)])
    t1 = (tmp_path / "tables" / "table1.md").read_text()
    assert "| gpt2_teacher -> gpt2_student | SFT | 21.50 ± 0.50" in t1 and "gpt2/teacher" in t1
