"""The claims' figures drawn from their CSV files: the forest plot (every claim one interval, at the CSV's values,
coloured and shaped by verdict, the paper's number where it gives one) and the KD w/ DSKD - KD plot per table."""
import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex

from repro import claims, figures, tables, verdicts
from repro.io import read_csv


def _artists(fig) -> dict[str, object]:
    """Every artist of the figure that carries an id, by id."""
    found = {}
    for ax in fig.axes:
        for artist in list(ax.lines) + list(ax.collections):
            if artist.get_gid():
                found[artist.get_gid()] = artist
    return found


def _claim(group, label, verdict, delta=None, low=None, high=None, paper=(None, None), unit=claims.UNIT_TABLES,
           threshold=0.0):
    return {"group": group, "label": label, "claim": group, "where": "Table 1", "comparison": label, "a": "a",
            "b": "b", "paper": "above", "paper_low": paper[0], "paper_high": paper[1], "unit": unit,
            "threshold": threshold, "delta": delta, "low": low, "high": high, "runs": "3 vs 3", "verdict": verdict}


CLAIMS = [
    _claim("Premise", "gpt2 (Table 1)", "undecided", 4.71, 3.84, 5.55, threshold=5.0),
    _claim("Premise", "llama (Table 2)", "holds", 14.16, 12.96, 15.44, threshold=5.0),
    _claim("KD w/ DSKD above KD (Table 1, gpt2)", "KL", "undecided", -0.39, -1.22, 0.54, paper=(0.43, 1.39)),
    _claim("KD w/ DSKD above KD (Table 1, gpt2)", "JS", "does not hold", -1.36, -2.27, -0.43, paper=(1.39, 1.39)),
    _claim("DSKD-CMA above the baselines (Table 2, mistral_tinyllama)", "MinED", "does not hold", -1.84, -3.21, -0.58,
           paper=(5.0, None)),
    _claim("DSKD-CMA above the baselines (Table 2, mistral_tinyllama)", "ULD", "not measured"),
    _claim("Figure 1", "KL", "holds (2 of 2 repetitions)", 1.12, 0.68, 1.56, unit="Δ toy distance"),
    _claim("Figure 3", "cosine (gpt2)", "does not hold", -0.012, -0.015, -0.003, unit="Δ cosine distance"),
    _claim("Figure 3", "inner-product (gpt2)", "undecided", 0.24, -0.77, 2.74, unit="Δ inner-product distance"),
]


def test_forest_plot_draws_every_claim_of_the_csv_at_its_values(tmp_path):
    path = tmp_path / "claims.csv"
    path.write_text(claims.to_csv(CLAIMS))
    rows = claims.read_claims(path)
    fig = figures.plot_claims(rows)
    drawn = _artists(fig)
    for n, row in enumerate(rows):
        kind = verdicts.verdict_class(row["verdict"])
        if row["delta"] is None:  # not measured: said so, nothing drawn
            assert f"claim{n}:estimate" not in drawn and f"claim{n}:interval" not in drawn
            continue
        estimate, interval = drawn[f"claim{n}:estimate"], drawn[f"claim{n}:interval"]
        assert list(estimate.get_xdata()) == [row["delta"]]
        assert list(interval.get_xdata()) == [row["low"], row["high"]]
        assert to_hex(estimate.get_color()) == to_hex(verdicts.VERDICT_COLORS[kind])
        assert estimate.get_marker() == figures.VERDICT_MARKERS[kind][0]
        filled = to_hex(estimate.get_markerfacecolor()) != "#ffffff"
        assert filled == figures.VERDICT_MARKERS[kind][1]
        paper = drawn.get(f"claim{n}:paper")
        assert (paper is None) == (row["paper_low"] is None)
    assert list(drawn["claim3:paper"].get_xdata()) == [1.39] and drawn["claim3:paper"].get_marker() == "D"
    assert drawn["claim4:paper"].get_marker() == ">" and list(drawn["claim4:paper"].get_xdata()) == [5.0]
    assert drawn["claim2:paper"].get_gid() == "claim2:paper" and not hasattr(drawn["claim2:paper"], "get_xdata")
    # one panel per group and unit, in the CSV's order, labelled by the rows' labels; the premise's bar dashed at 5
    panels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert panels == [["gpt2 (Table 1)", "llama (Table 2)"], ["KL", "JS"], ["MinED", "ULD"], ["KL"],
                      ["cosine (gpt2)"], ["inner-product (gpt2)"]]
    assert [ax.get_xlabel() for ax in fig.axes][3:] == ["Δ toy distance", "Δ cosine distance",
                                                       "Δ inner-product distance"]
    assert any(line.get_linestyle() == "--" and list(line.get_xdata()) == [5.0, 5.0] for line in fig.axes[0].lines)
    assert any(t.get_text() == "not measured" for t in fig.axes[2].texts)
    for ax, members in zip(fig.axes, ([0, 1], [2, 3], [4, 5], [6], [7], [8])):  # every interval within the axis
        low, high = ax.get_xlim()
        assert all(low <= v <= high for n in members for v in (rows[n]["low"], rows[n]["high"]) if v is not None)
    png, pdf = figures.save_figure(fig, tmp_path / "claims")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    plt.close(fig)
    empty = figures.plot_claims([])
    assert any("No claim" in t.get_text() for t in empty.texts)
    plt.close(empty)


def _table_row(cell, method, divergence, pair="gpt2", delta=None, low=None, high=None, paper=None, kd=None):
    row = {"table": 1, "pair": pair, "teacher": f"{pair}_teacher", "student": f"{pair}_student", "row": cell,
           "cell": cell, "method": method, "divergence": divergence, "status": "done", "avg": 20.0, "avg_std": 0.5,
           "paper_avg": paper}
    if method == "dskd":
        row.update(compared_with=kd, delta_vs_kd=delta, delta_low=low, delta_high=high, runs_compared="3 vs 3")
    return row


def test_table_difference_plot_reads_the_tables_csv(tmp_path):
    rows = [_table_row("gpt2/kd-kl", "kd", "kl"), _table_row("gpt2/kd-js", "kd", "js", paper=16.98),
            _table_row("gpt2/dskd-kl", "dskd", "kl", delta=0.8, low=0.2, high=1.4, kd="gpt2/kd-kl"),
            _table_row("gpt2/dskd-js", "dskd", "js", delta=-1.0, low=-1.5, high=-0.3, paper=18.37, kd="gpt2/kd-js"),
            _table_row("tiny/kd-kl", "kd", "kl", pair="tiny"),
            _table_row("tiny/dskd-kl", "dskd", "kl", pair="tiny", delta=0.1, low=-0.5, high=0.7, kd="tiny/kd-kl"),
            _table_row("tiny/dskd-js", "dskd", "js", pair="tiny", kd="tiny/kd-js"),  # not compared: not drawn
            _table_row("qwen/sft", "sft", None, pair="qwen")]
    path = tmp_path / "table1.csv"
    path.write_text(tables.to_csv(rows))
    read = read_csv(path)
    assert [r["cell"] for r in figures.table_difference_rows(read)] == ["gpt2/dskd-kl", "gpt2/dskd-js",
                                                                         "tiny/dskd-kl"]
    fig = figures.plot_table_differences(read, 1, claims.PAPER_DSKD_GAIN[1])
    assert [ax.get_title() for ax in fig.axes] == ["gpt2: gpt2_teacher -> gpt2_student",
                                                   "tiny: tiny_teacher -> tiny_student"]
    assert [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes] == [["KL", "JS"], ["KL"]]
    drawn = _artists(fig)
    for cell, delta, low, high, kind in (("gpt2/dskd-kl", 0.8, 0.2, 1.4, "holds"),
                                         ("gpt2/dskd-js", -1.0, -1.5, -0.3, "does not hold"),
                                         ("tiny/dskd-kl", 0.1, -0.5, 0.7, "undecided")):
        assert list(drawn[f"{cell}:estimate"].get_ydata()) == [delta]
        assert list(drawn[f"{cell}:interval"].get_ydata()) == [low, high]
        assert to_hex(drawn[f"{cell}:estimate"].get_color()) == to_hex(verdicts.VERDICT_COLORS[kind])
    # the paper's difference where the CSV gives both rows' paper Avg (18.37 - 16.98), nowhere else
    assert list(drawn["gpt2/dskd-js:paper"].get_ydata()) == [pytest.approx(1.39)]
    assert "gpt2/dskd-kl:paper" not in drawn and "tiny/dskd-kl:paper" not in drawn
    assert "paper: +0.43 to +1.39 over divergences" in [t.get_text() for t in fig.legends[0].get_texts()]
    png, pdf = figures.save_figure(fig, tmp_path / "table1_dskd_minus_kd")
    assert png.stat().st_size > 5000 and pdf.read_bytes()[:5] == b"%PDF-"
    plt.close(fig)
    none = figures.plot_table_differences(read[:2], 2)
    assert "has no KD w/ DSKD row" in none.axes[0].texts[0].get_text()
    plt.close(none)
