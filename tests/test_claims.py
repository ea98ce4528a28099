"""The claims table: verdicts from intervals over training runs, the dev-chosen DSKD-CMA row, Figures 1 and 3."""
import pytest
from test_tables import _write_cell, small_grid

from repro import claims, grid, tables


@pytest.fixture
def config(tmp_path):
    return small_grid(tmp_path)


def test_verdicts_follow_the_interval():
    assert claims.verdict(0.1, 2.0) == "holds"
    assert claims.verdict(-2.0, -0.1) == "does not hold"
    assert claims.verdict(-0.1, 2.0) == "undecided"
    assert claims.verdict(4.0, 9.0, threshold=5.0) == "undecided" and claims.verdict(5.5, 9.0, threshold=5.0) == "holds"
    assert claims.verdict(None, None) == "not measured"


def test_table_claims_on_synthetic_runs(config):
    for cell in grid.cells(config):
        if cell.role == "teacher":
            _write_cell(config, cell, 40.0)
        elif cell.method == "dskd":  # two runs, both above KD on every prompt
            _write_cell(config, cell, 20.0, per_example=[21.0, 22.0, 23.0, 24.0], shift=0.5)
        elif cell.method == "dskd_student_space":  # one run above KD, one below: undecided
            _write_cell(config, cell, 20.0, per_example=[19.0, 20.0, 21.0, 22.0], shift=2.0)
        elif cell.method == "kd":  # below SFT
            _write_cell(config, cell, 19.0)
        elif cell.method == "dskd_cma":  # the KL row best on dev, but the JS row best on test
            dev = 30.0 if cell.divergence == "kl" else 10.0
            _write_cell(config, cell, 25.0 if cell.divergence == "kl" else 40.0, dev=dev)
        else:
            _write_cell(config, cell, 20.0)
    rows = claims.table_claims(config)
    by = {(r["claim"], r["a"], r["b"]): r for r in rows}
    dskd = by[("KD w/ DSKD above KD", "gpt2/dskd-js", "gpt2/kd-js")]
    assert dskd["verdict"] == "holds" and dskd["paper"] == "+1.39" and dskd["runs"] == "2 vs 2"
    assert dskd["delta"] == tables.compare(config, grid.Cell("gpt2", "dskd", divergence="js"),
                                           grid.Cell("gpt2", "kd", divergence="js"))["delta"] == 2.25
    assert by[("KD w/ DSKD above KD", "llama/dskd-kl", "llama/kd-kl")]["paper"] == "+0.82 to +3.35"
    assert by[("KD above the student's SFT", "gpt2/kd-kl", "gpt2/sft")]["verdict"] == "does not hold"
    premise = by[("premise: the teacher at least 5 points above the student's SFT", "qwen_gpt2/teacher", "gpt2/sft")]
    assert premise["verdict"] == "holds" and premise["runs"] == "1 vs 2"  # 20 points above, one teacher run
    cma = [r for r in rows if r["claim"].startswith("DSKD-CMA")]
    assert {r["a"] for r in cma} == {"qwen_gpt2/dskd_cma-kl", "mistral_tinyllama/dskd_cma-kl"}  # chosen on dev
    assert {r["b"] for r in cma if r["a"].startswith("qwen")} == {"qwen_gpt2/mined", "qwen_gpt2/uld",
                                                                   "qwen_gpt2/seqkd"}
    student = by[("student space only above different spaces (KD)", "gpt2/dskd_student_space-kl", "gpt2/kd-kl")]
    assert student["verdict"] == "undecided"
    text = claims.to_markdown(rows)
    assert text.count("\n| ") == len(rows) + 1 and f"{len(rows)} comparisons:" in text


def test_figure_claims():
    toy = {"divergences": {"kl": {"different": {"distance_after": {"mean": 3.0}, "distance_after_runs": [3.5, 2.5]},
                                  "shared": {"distance_after": {"mean": 1.0}, "distance_after_runs": [1.0, 1.0]}},
                           "rkl": {"different": {"distance_after": {"mean": 1.0}, "distance_after_runs": [1.5, 0.5]},
                                   "shared": {"distance_after": {"mean": 1.0}, "distance_after_runs": [1.0, 1.0]}}}}
    kl, rkl = claims.figure1_claims(toy)
    assert kl["verdict"] == "holds (2 of 2 repetitions)" and (kl["low"], kl["high"]) == (1.5, 2.5)
    assert rkl["verdict"] == "undecided (1 of 2 repetitions)" and rkl["delta"] == 0.0
    rep = {"values": {"gpt2": {"KD": {"cosine": [0.2, 0.4], "inner_product": [1.0]},
                               "DSKD": {"cosine": [0.1, 0.1], "inner_product": [2.0]},
                               "SFT": {"cosine": [0.5], "inner_product": [1.0]}}}}
    cosine, inner = claims.figure3_claims(rep)  # a results file without runs: measured, not decided
    assert round(cosine["delta"], 6) == 0.2 and inner["delta"] == -1.0
    assert cosine["verdict"].startswith("undecided") and cosine["runs"] == "1 vs 1"
    rep["values_by_run"] = {"gpt2": {  # KD farther than DSKD in both runs, on every example
        "KD": {"10": {"cosine": [0.3, 0.3], "inner_product": [1.0, 1.0]},
               "20": {"cosine": [0.4, 0.4], "inner_product": [1.0, 1.0]}},
        "DSKD": {"10": {"cosine": [0.1, 0.1], "inner_product": [1.0, 1.0]},
                 "20": {"cosine": [0.2, 0.2], "inner_product": [1.0, 1.0]}},
        "SFT": {"10": {"cosine": [0.5, 0.5], "inner_product": [1.0, 1.0]}}}}
    cosine, inner = claims.figure3_claims(rep)
    assert round(cosine["delta"], 6) == 0.2 and cosine["verdict"] == "holds" and cosine["runs"] == "2 vs 2"
    assert 0.1 - 1e-9 <= cosine["low"] <= cosine["high"] <= 0.3 + 1e-9
    assert inner["delta"] == 0.0 and inner["verdict"] == "undecided"
