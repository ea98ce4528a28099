"""The claims table: verdicts from intervals over training runs, the dev-chosen DSKD-CMA row, Figures 1 and 3."""
import pytest
from test_tables import _write_cell, small_grid

from repro import claims, grid, tables, verdicts


@pytest.fixture
def config(tmp_path):
    return small_grid(tmp_path)


def test_verdicts_follow_the_interval():
    assert verdicts.verdict(0.1, 2.0) == "holds"
    assert verdicts.verdict(-2.0, -0.1) == "does not hold"
    assert verdicts.verdict(-0.1, 2.0) == "undecided"
    assert verdicts.verdict(4.0, 9.0, threshold=5.0) == "undecided"
    assert verdicts.verdict(5.5, 9.0, threshold=5.0) == "holds"
    assert verdicts.verdict(None, None) == "not measured"


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


def _row(group, label, verdict_text, delta=None, low=None, high=None, unit=claims.UNIT_TABLES, **extra):
    return {"group": group, "label": label, "claim": group, "where": "Table 1", "comparison": f"{label} - x",
            "a": "a", "b": "b", "paper": "above", "paper_low": None, "paper_high": None, "unit": unit,
            "threshold": 0.0, "delta": delta, "low": low, "high": high, "runs": "3 vs 3", "verdict": verdict_text,
            **extra}


def test_summary_sentences_and_counts_by_hand():
    rows = [_row("DSKD above KD (Table 2, llama)", "KL", "does not hold", -2.32, -3.73, -0.83),
            _row("DSKD above KD (Table 2, llama)", "RKL", "undecided", 0.36, -0.78, 1.56),
            _row("DSKD above KD (Table 2, llama)", "AKL", "holds", 0.5, 0.1, 0.9),
            _row("DSKD above KD (Table 2, llama)", "JS", "does not hold", -1.36, -2.27, -0.43),
            _row("Premise", "gpt2", "holds", 6.19, 5.22, 7.15),
            _row("Figure 1", "KL", "holds (2 of 2 repetitions)", 0.0123, 0.0101, 0.0145, unit="Δ toy distance"),
            _row("Figure 3", "cosine (gpt2)", "not measured")]
    summary = claims.summarize(rows)
    assert summary["counts"] == {"holds": 3, "does not hold": 2, "undecided": 1, "not measured": 1}
    assert summary["line"] == "7 comparisons: 3 hold, 2 do not hold, 1 undecided, 1 not measured."
    assert [g["sentence"] for g in summary["groups"]] == [
        "DSKD above KD (Table 2, llama): holds for AKL; does not hold for KL, JS; undecided for RKL "
        "(Δ -2.32 to +0.50).",
        "Premise: holds (Δ +6.19 [+5.22, +7.15]).",
        "Figure 1: holds (Δ +0.0123 [+0.0101, +0.0145]).",  # a distance to three significant digits
        "Figure 3: not measured."]
    assert [g["counts"]["does not hold"] for g in summary["groups"]] == [2, 0, 0, 0]
    text = claims.summary_markdown(rows)
    assert text.startswith(f"**{summary['line']}**\n\n- DSKD above KD") and text.count("\n- ") == 4
    three = [_row("G", d, "undecided", 0.1, -1.0, 1.0) for d in ("KL", "JS", "AKL")]
    assert claims.group_sentence("G", three) == "G: undecided for all 3 (Δ +0.10 to +0.10)."
    assert claims.group_sentence("G", three[:2]) == "G: undecided for both (Δ +0.10 to +0.10)."


def test_paper_text():
    assert claims.paper_text((0.56, 0.56)) == "+0.56"
    assert claims.paper_text((0.43, 1.39)) == "+0.43 to +1.39"
    assert claims.paper_text((5.0, None), " (AKL)") == "> +5 (AKL)"


def test_claims_csv_carries_what_the_summary_and_the_plot_read(config, tmp_path, capsys):
    for cell in grid.cells(config):
        _write_cell(config, cell, 40.0 if cell.role == "teacher" else 20.0,
                    per_example=None if cell.method != "dskd" else [21.0, 22.0, 23.0, 24.0])
    paths = claims.write_claims(config)
    rows = claims.claims(config)
    back = claims.read_claims(paths[1])
    assert back == [{k: ("" if v is None and k not in claims.NUMBERS else v) for k, v in r.items()} for r in rows]
    assert all(r["group"] and r["label"] and r["unit"] for r in back)
    premise = [r for r in back if r["group"].startswith("Premise")]
    assert {r["threshold"] for r in premise} == {5.0} and {r["label"] for r in premise} == {
        "gpt2 (Table 1)", "qwen_gpt2 (Table 1)", "llama (Table 2)", "mistral_tinyllama (Table 2)"}
    js = next(r for r in back if r["a"] == "gpt2/dskd-js" and r["b"] == "gpt2/kd-js")
    assert (js["paper"], js["paper_low"], js["paper_high"], js["label"]) == ("+1.39", 1.39, 1.39, "JS")
    kl = next(r for r in back if r["a"] == "gpt2/dskd-kl" and r["b"] == "gpt2/kd-kl")
    assert (kl["paper_low"], kl["paper_high"]) == claims.PAPER_DSKD_GAIN[1]
    mined = next(r for r in back if r["b"] == "mistral_tinyllama/mined")
    assert (mined["paper"], mined["paper_low"], mined["paper_high"]) == ("> +5 (AKL)", 5.0, None)
    # each group's rows together, in the table's order: the Table 3 claims come as two groups, not interleaved
    order = [r["group"] for r in back]
    assert all(order.index(g) + order.count(g) - 1 == len(order) - 1 - order[::-1].index(g) for g in set(order))
    text = paths[0].read_text()
    assert text.index(claims.counts_line(rows)) < text.index("| Claim |")  # the summary first
    claims.main([str(paths[1])])
    assert capsys.readouterr().out == claims.summary_markdown(back)
    with pytest.raises(SystemExit, match="no claims table"):
        claims.main([str(tmp_path / "none.csv")])


def test_a_claims_csv_of_another_version_or_with_a_bad_number_is_named(tmp_path):
    old = tmp_path / "old.csv"
    old.write_text("claim,where,delta\nx,Table 1,0.5\n")
    with pytest.raises(ValueError, match=r"old\.csv: not a claims table of this version, columns group, label"):
        claims.read_claims(old)
    bad = tmp_path / "bad.csv"
    bad.write_text(claims.to_csv([_row("G", "KL", "holds", 1.0, 0.5, 1.5)]).replace(",1.5,", ",one,"))
    with pytest.raises(ValueError, match=r"bad\.csv, line 2: high is 'one', expected a number"):
        claims.read_claims(bad)
