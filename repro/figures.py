"""Figures 1-3, the per-cell training curves, the forest plot of the claims and the DSKD - KD differences per table,
drawn with matplotlib/seaborn and saved as PNG and PDF.

Each ``plot_*`` function takes the machine-readable results (plain dicts/lists, as the analysis steps write them
to JSON) and returns a matplotlib figure; ``save_figure`` writes it atomically in both formats. No torch import.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .io import atomic_path
from .names import DIVERGENCE_TITLES
from .verdicts import VERDICT_COLORS, verdict, verdict_class

if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # no screen needed; inline display in notebooks still works through the kernel

SETTING_TITLES = {"different": "different heads (KD)", "shared": "shared head (DSKD)"}
SETTING_COLORS = {"different": "tab:orange", "shared": "tab:blue"}


def save_figure(fig, stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Write ``fig`` to ``stem``.png (150 dpi) and ``stem``.pdf (or the ``formats`` given), atomically; returns the
    paths."""
    paths = []
    for ext in formats:
        path = Path(f"{stem}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths


def plot_study(results: dict[str, list[dict]], pairs: list[str], divergences: int):
    """The study's plot: per pair, DSKD - KD of every condition and divergence (``results``: condition ->
    ``repro.study.compare`` rows) as a point with its 95% interval over training runs, against 0."""
    height = 0.6 * len(results) * divergences + 1.5
    fig, axes = plt.subplots(1, len(pairs), figsize=(7 * len(pairs), height), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        labels, deltas, lows, highs = [], [], [], []
        for name, rows in results.items():
            for r in rows:
                if r["pair"] == pair and r["comparison"] == "DSKD - KD":
                    labels.append(f"{name} ({r['divergence'].upper()})")
                    deltas.append(r["delta"])
                    lows.append(r["delta"] - r["low"])
                    highs.append(r["high"] - r["delta"])
        y = range(len(labels))
        ax.errorbar(deltas, y, xerr=[lows, highs], fmt="o", capsize=3)
        ax.axvline(0, color="grey", linestyle=":")
        ax.set_yticks(list(y), labels)
        ax.set(xlabel="DSKD - KD, Avg Rouge-L", title=f"{pair}: DSKD - KD with 95% intervals over training runs")
    fig.tight_layout()
    return fig


def _title(divergence: str) -> str:
    return DIVERGENCE_TITLES.get(divergence, divergence)


def plot_toy(results: dict):
    """Figure 1: per divergence (rows), the hidden states of the first repetition before training, after training
    with different heads and with a shared head (at the lowest loss), and the loss curves of both settings averaged
    over the repetitions (shaded: ± one std)."""
    names = list(results["divergences"])
    reps = results["settings"]["repetitions"]
    fig, axes = plt.subplots(len(names), 4, figsize=(16, 3.4 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        entry = results["divergences"][name]
        example = entry["different"]["example"]
        panels = [("before training", example["student_before"]),
                  (f"after, {SETTING_TITLES['different']}", example["student_after"]),
                  (f"after, {SETTING_TITLES['shared']}", entry["shared"]["example"]["student_after"])]
        limits = _limits([example["teacher"]] + [p for _, p in panels])
        for ax, (label, student) in zip(row, panels):
            ax.scatter(*zip(*example["teacher"]), s=9, c="tab:red", label="teacher", alpha=0.8)
            ax.scatter(*zip(*student), s=9, c="tab:green", label="student", alpha=0.8)
            ax.set(title=f"{_title(name)}: {label}", xlabel="hidden dim 1", ylabel="hidden dim 2",
                   xlim=limits, ylim=limits, aspect="equal")
            ax.legend(loc="upper left", fontsize=7)
        ax = row[3]
        for setting in ("different", "shared"):
            mean, std = entry[setting]["loss_mean"], entry[setting]["loss_std"]
            steps = range(len(mean))
            ax.plot(steps, mean, color=SETTING_COLORS[setting], label=SETTING_TITLES[setting])
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=SETTING_COLORS[setting], alpha=0.2)
        ax.set(title=f"{_title(name)}: loss (mean of {reps} runs)", xlabel="SGD step",
               ylabel=f"{_title(name)} divergence (nats)", yscale="log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _limits(point_sets) -> tuple[float, float]:
    values = [v for points in point_sets for p in points for v in p]
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def toy_table(rows: list[dict]) -> str:
    """Markdown table of the toy simulation's final teacher-student distances (rows from
    ``repro.toy.distance_rows``)."""
    lines = ["| Divergence | Distance before | Different heads: distance | Shared head: distance | "
             "Different heads: lowest loss | Shared head: lowest loss |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_title(r['divergence'])} | {r['distance_before']:.3f} | "
                     f"{r['different_distance']:.3f} ± {r['different_distance_std']:.3f} | "
                     f"{r['shared_distance']:.3f} ± {r['shared_distance_std']:.3f} | "
                     f"{r['different_loss']:.4f} | {r['shared_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_representation(values: dict):
    """Figure 3: box plots of the cosine and inner-product structure distances to the teacher, per student.

    ``values``: {pair title: {student label: {"cosine": [...], "inner_product": [...]}}}.
    """
    records = [{"pair": pair, "student": label, "distance": kind, "value": v}
               for pair, students in values.items() for label, kinds in students.items()
               for kind, vals in kinds.items() for v in vals]
    frame = pd.DataFrame(records)
    pairs = list(values)
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.6 * len(pairs)), squeeze=False)
    titles = {"cosine": "cosine-similarity structure", "inner_product": "inner-product structure"}
    for row, pair in zip(axes, pairs):
        for ax, kind in zip(row, ("cosine", "inner_product")):
            data = frame[(frame.pair == pair) & (frame.distance == kind)]
            sns.boxplot(data=data, x="student", y="value", hue="student", ax=ax, palette="Set2", legend=False)
            ax.set(title=f"{pair}\n{titles[kind]}", xlabel="student", ylabel="distance to teacher (lower = closer)")
            _clip_outliers(ax, data["value"].tolist())
    fig.tight_layout()
    return fig


def _clip_outliers(ax, values: list[float]) -> None:
    """Keep a few extreme values from flattening the boxes: when the largest value is more than five times the
    99th percentile, cut the axis above the percentile and say how many values lie beyond it. (The inner-product
    distance divides by row sums of inner products, which can be near zero.)"""
    ordered = sorted(values)
    if not ordered:
        return
    q99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    if q99 > 0 and ordered[-1] > 5 * q99:
        top = 1.3 * q99
        beyond = sum(v > top for v in ordered)
        ax.set_ylim(ordered[0] - 0.05 * (top - ordered[0]), top)
        ax.text(0.98, 0.97, f"{beyond} value(s) above the axis (max {ordered[-1]:.3g})", transform=ax.transAxes,
                ha="right", va="top", fontsize=7)


def judge_table(summary: dict) -> str:
    """Markdown table of the judge's counts per comparison (``repro.judge.summarize``); with both orders judged,
    two more columns (the orders' agreement, the first position's share of decisive verdicts) and a note on them."""
    position = any("agreement" in s for s in summary.values())
    extra = " Orders agree | First position wins |" if position else ""
    lines = ["| Comparison | DSKD wins | Ties | KD wins | Judged | Invalid |" + extra,
             "|---|---|---|---|---|---|" + ("---|---|" if position else "")]
    for name, s in summary.items():
        line = f"| {name} | {s['wins']} | {s['ties']} | {s['losses']} | {s['n']} | {s['invalid']} |"
        if position:
            line += (f" {s['agreements']}/{s['pairs']} ({100 * s['agreement']:.0f}%) |"
                     f" {s['first_position_wins']}/{s['decisive']} ({100 * s['first_position_share']:.0f}%) |")
        lines.append(line)
    if position:
        lines += ["", "Every prompt judged in both orders; counts are verdicts. Orders agree: prompts whose two "
                      "orders chose the same winner (or both a tie). First position wins: decisive verdicts that "
                      "chose the answer shown first (50% without position bias)."]
    return "\n".join(lines) + "\n"


def plot_judge(summary: dict):
    """Figure 2: per comparison (DSKD vs KD with one divergence), the share of wins, ties and losses of DSKD as
    judged by the LLM, as stacked horizontal bars (percent of validly judged prompts).

    ``summary``: {comparison title: {"wins", "ties", "losses", "n", "invalid", ...}} (``repro.judge.summarize``).
    """
    names = list(summary)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(names) + 1.5))
    parts = [("wins", "DSKD wins", "tab:blue"), ("ties", "tie", "lightgray"), ("losses", "KD wins", "tab:orange")]
    left = [0.0] * len(names)
    for key, label, color in parts:
        shares = [100.0 * summary[n][key] / summary[n]["n"] if summary[n]["n"] else 0.0 for n in names]
        ax.barh(names, shares, left=left, color=color, label=label)
        for y, (x0, share) in enumerate(zip(left, shares)):
            if share >= 6:
                ax.text(x0 + share / 2, y, f"{share:.0f}", ha="center", va="center", fontsize=8)
        left = [a + b for a, b in zip(left, shares)]
    ax.set(xlim=(0, 100), xlabel="share of judged prompts (%)", title="LLM judge: DSKD vs vanilla KD")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.08), ncol=3, fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(logs: dict[str, list[dict]], title: str, kept: dict[str, int] | None = None):
    """One table row's training curves from the ``train_log.jsonl`` records of each of its runs (``{label: records}``,
    e.g. one per training seed): the total loss and every logged term per optimiser step (left), other diagnostics
    such as accuracies and the gradient norm (middle), and dev Rouge-L per epoch (right). A colour per quantity, a
    line style per run; ``kept``: the epoch of each run's kept checkpoint, marked on the right."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    styles = ["-", "--", ":", "-."]
    colours: dict[str, str] = {}
    positive = True
    for n, (label, log) in enumerate(logs.items()):
        style = styles[n % len(styles)]
        steps = [r for r in log if "step" in r and "event" not in r]
        epochs = [r for r in log if r.get("event") == "epoch_end"]
        keys = [k for k in steps[0] if k not in ("step", "epoch", "lr", "grad_norm")] if steps else []
        losses = [k for k in keys if "acc" not in k]
        others = [k for k in keys if "acc" in k] + ["grad_norm"]
        x = [r["step"] for r in steps]
        for ax, names in ((axes[0], losses), (axes[1], others)):
            for k in names:
                if steps and k in steps[0]:
                    first = k not in colours
                    line, = ax.plot(x, [r[k] for r in steps], ls=style, lw=1, color=colours.get(k),
                                    label=k if first else None)
                    colours.setdefault(k, line.get_color())
        positive = positive and all(r[k] > 0 for r in steps for k in losses)
        axes[2].plot([r["epoch"] for r in epochs], [r["dev_rougeL"] for r in epochs], marker="o", ls=style,
                     color="black", label=label)
        if kept and kept.get(label) is not None:
            axes[2].axvline(kept[label], color="grey", ls=style, lw=1, label=f"{label}: kept checkpoint")
    runs = ", ".join(f"{label} {styles[n % len(styles)]}" for n, label in enumerate(logs))
    # log scale: cross-entropy terms (nats) and KD terms near zero share the panel
    axes[0].set(title=f"{title}: loss terms", xlabel="optimiser step", ylabel="loss (nats per response token)",
                yscale="log" if positive and axes[0].lines else "linear")
    axes[1].set(title=f"diagnostics (runs: {runs})", xlabel="optimiser step",
                ylabel="value (accuracy: fraction)")
    axes[2].set(title="dev Rouge-L per epoch", xlabel="epoch", ylabel="Rouge-L (x100)")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# Marker of each verdict: the forest plot reads without colour too (filled circle, filled square, open circle).
VERDICT_MARKERS = {"holds": ("o", True), "does not hold": ("s", True), "undecided": ("o", False)}
PAPER_STYLE = {"color": "black", "zorder": 4}
PAPER_RANGE = {"color": "black", "alpha": 0.1, "lw": 0, "zorder": 0}  # the paper's range: a shaded band


def _number(value) -> float | None:
    """A CSV cell as a number: None for an empty cell (csv writes None as "")."""
    return None if value in (None, "", "None") else float(value)


def _draw_interval(ax, x: float | None, low: float | None, high: float | None, kind: str, position: float,
                   horizontal: bool = True, gid: str = "") -> None:
    """One estimate ``x`` with its interval [low, high], coloured and shaped by its verdict ``kind``; the artists
    carry the ids ``<gid>:interval`` and ``<gid>:estimate`` (what the tests read back)."""
    color = VERDICT_COLORS[kind]
    marker, filled = VERDICT_MARKERS.get(kind, ("o", False))
    if low is not None and high is not None:
        ends = ([low, high], [position, position]) if horizontal else ([position, position], [low, high])
        ax.plot(*ends, color=color, lw=2, solid_capstyle="butt", zorder=2, gid=f"{gid}:interval")
    if x is not None:
        point = (x, position) if horizontal else (position, x)
        ax.plot(*point, marker=marker, ms=7, color=color, markerfacecolor=color if filled else "white",
                markeredgewidth=1.6, zorder=3, gid=f"{gid}:estimate")


def _draw_paper(ax, low: float | None, high: float | None, position: float, horizontal: bool = True,
                gid: str = "") -> None:
    """The paper's number for a row: a diamond for one number, a shaded band for a range, a triangle for "more
    than" (id ``<gid>:paper``)."""
    if low is None:
        return
    at = (lambda v: (v, position)) if horizontal else (lambda v: (position, v))
    if high is None:
        ax.plot(*at(low), marker=">" if horizontal else "^", ms=7, markerfacecolor="white", gid=f"{gid}:paper",
                **PAPER_STYLE)
    elif low == high:
        ax.plot(*at(low), marker="D", ms=6, markerfacecolor="white", gid=f"{gid}:paper", **PAPER_STYLE)
    else:
        fill = ax.fill_betweenx if horizontal else ax.fill_between
        fill([position - 0.5, position + 0.5], low, high, gid=f"{gid}:paper", **PAPER_RANGE)


def _legend_handles() -> list:
    handles = []
    for kind in ("holds", "does not hold", "undecided"):
        marker, filled = VERDICT_MARKERS[kind]
        color = VERDICT_COLORS[kind]
        handles.append(Line2D([], [], color=color, lw=2, marker=marker, ms=7, markeredgewidth=1.6,
                              markerfacecolor=color if filled else "white", label=kind))
    handles += [Line2D([], [], ls="none", marker="D", ms=6, markerfacecolor="white", label="paper's number",
                       **PAPER_STYLE),
                Patch(label="paper's range over divergences", **PAPER_RANGE),
                Line2D([], [], ls="none", marker=">", ms=7, markerfacecolor="white", label="paper: more than",
                       **PAPER_STYLE)]
    return handles


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def plot_claims(rows: list[dict], title: str | None = None):
    """The forest plot of the claims: every row of ``claims.csv`` (``repro.claims.read_claims``) as its estimate Δ
    and interval against 0 (the premise: against its 5-point bar, dashed), one panel per group of claims and unit
    (groups in the table's order, in two columns), coloured and shaped by verdict, with the paper's number marked
    where it gives one (a diamond; a shaded band for its range over divergences; a triangle for "more than"). A row
    without a measurement says so in its panel. Every value is the CSV's; nothing is recomputed."""
    panels: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for n, row in enumerate(rows):
        panels.setdefault((row["group"], row["unit"]), []).append((n, row))
    row_in, head_in, foot_in, top_in = 0.26, 0.42, 0.5, 0.75  # inches: per row, panel title, x axis, legend
    col_w, label_w, gap_w = 6.2, 1.55, 0.5
    sizes = [head_in + row_in * (len(members) + 0.6) + foot_in for members in panels.values()]
    half, columns, acc = sum(sizes) / 2, [[], []], 0.0
    for key, size in zip(panels, sizes):  # fill the left column to about half the height, the rest on the right
        columns[0 if acc + size / 2 <= half or not columns[0] else 1].append((key, size))
        acc += size
    height = top_in + max([sum(size for _, size in col) for col in columns] + [1.0])
    width = 2 * col_w + gap_w
    fig = plt.figure(figsize=(width, height))
    fig.suptitle(title or "The paper's claims in this run", x=0.01, ha="left", y=1 - 0.12 / height, fontsize=11,
                 fontweight="bold")
    if not rows:
        fig.text(0.5, 0.5, "No claim could be measured in this run.", ha="center", va="center")
        return fig
    fig.legend(handles=_legend_handles(), loc="upper left", bbox_to_anchor=(0.005, 1 - 0.3 / height), ncol=6,
               fontsize=8, frameon=False, handlelength=2.2)
    for c, column in enumerate(columns):
        top = height - top_in
        left = c * (col_w + gap_w)
        for (group, unit), size in column:
            members = panels[(group, unit)]
            axes_h = row_in * (len(members) + 0.6)
            ax = fig.add_axes([(left + label_w) / width, (top - head_in - axes_h) / height,
                               (col_w - label_w - 0.1) / width, axes_h / height])
            fig.text((left + 0.05) / width, (top - 0.05) / height, _wrap(group, 80), ha="left", va="top",
                     fontsize=8.5, fontweight="bold")
            _claims_panel(ax, members, unit)
            top -= size
    return fig


def _claims_panel(ax, members: list[tuple[int, dict]], unit: str) -> None:
    """One panel of the forest plot: ``members`` are (index in the CSV, row); row ``n``'s artists carry the id
    ``claim<n>``."""
    values = [0.0]
    for i, (n, row) in enumerate(members):
        kind = verdict_class(row["verdict"])
        delta, low, high = (_number(row[k]) for k in ("delta", "low", "high"))
        if delta is None:
            ax.text(0.5, i, "not measured", transform=ax.get_yaxis_transform(), ha="center", va="center",
                    fontsize=8, color=VERDICT_COLORS["not measured"])
        _draw_interval(ax, delta, low, high, kind, i, gid=f"claim{n}")
        paper_low, paper_high = _number(row["paper_low"]), _number(row["paper_high"])
        _draw_paper(ax, paper_low, paper_high, i, gid=f"claim{n}")
        values += [v for v in (delta, low, high, paper_low, paper_high, _number(row["threshold"])) if v is not None]
    thresholds = {_number(r["threshold"]) or 0.0 for _, r in members}
    ax.axvline(0.0, color="black", lw=0.8, zorder=1)
    for t in sorted(thresholds - {0.0}):
        ax.axvline(t, color="black", lw=1, ls="--", zorder=1)
        ax.text(t, -0.75, f" bar: {t:g}", fontsize=7, va="bottom", ha="left")
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(len(members) - 0.4, -0.8)
    ax.set_yticks(range(len(members)), [r["label"] for _, r in members], fontsize=8)
    ax.tick_params(axis="x", labelsize=7.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_xlabel(unit, fontsize=8)
    ax.grid(axis="x", color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)


def table_difference_rows(rows: list[dict]) -> list[dict]:
    """The rows of a table's CSV (``results/tables/table{n}.csv``) that the DSKD - KD plot draws: every KD w/ DSKD
    row with a difference from its KD row."""
    return [r for r in rows if r["method"] == "dskd" and _number(r.get("delta_vs_kd")) is not None]


def plot_table_differences(rows: list[dict], table: int, paper_range: tuple[float, float] | None = None):
    """The DSKD - KD differences of one table: for each same-vocabulary pair (a panel) and divergence (the x axis), the
    KD w/ DSKD row's mean Avg minus the KD row's with its 95% interval, as the table's CSV gives them (``rows``: its
    rows, values as text or numbers), coloured and shaped by verdict; the paper's difference (a diamond) where
    PAPER.md gives both rows' Avg (``paper_avg`` of the two rows), and its range over divergences (``paper_range``,
    a shaded band)."""
    drawn = table_difference_rows(rows)
    by_cell = {r["cell"]: r for r in rows}
    pairs = list(dict.fromkeys(r["pair"] for r in drawn))
    fig, axes = plt.subplots(1, max(1, len(pairs)), figsize=(1.2 + 4.6 * max(1, len(pairs)), 3.8), squeeze=False,
                             sharey=True)
    if not pairs:
        axes[0][0].text(0.5, 0.5, f"Table {table} has no KD w/ DSKD row with a difference from KD.", ha="center",
                        va="center", transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
        return fig
    for ax, pair in zip(axes[0], pairs):
        members = [r for r in drawn if r["pair"] == pair]
        if paper_range is not None:
            ax.axhspan(*paper_range, **PAPER_RANGE)
        ax.axhline(0.0, color="black", lw=0.8, zorder=1)
        for i, r in enumerate(members):
            low, high = _number(r["delta_low"]), _number(r["delta_high"])
            _draw_interval(ax, _number(r["delta_vs_kd"]), low, high, verdict(low, high), i, horizontal=False,
                           gid=r["cell"])
            kd = by_cell.get(r.get("compared_with"))
            paper_dskd, paper_kd = _number(r.get("paper_avg")), _number(kd.get("paper_avg")) if kd else None
            if paper_dskd is not None and paper_kd is not None:
                _draw_paper(ax, round(paper_dskd - paper_kd, 2), round(paper_dskd - paper_kd, 2), i,
                            horizontal=False, gid=r["cell"])
        ax.set_xticks(range(len(members)), [DIVERGENCE_TITLES.get(r["divergence"], r["divergence"]) for r in members])
        ax.set_xlim(-0.6, len(members) - 0.4)
        ax.set(title=f"{pair}: {members[0]['teacher']} -> {members[0]['student']}", xlabel="divergence")
        ax.grid(axis="y", color="#e6e6e6", lw=0.6)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("KD w/ DSKD - KD: Δ Avg Rouge-L\n(95% interval)")
    handles = _legend_handles()[:4]
    if paper_range is not None:
        handles.append(Patch(label=f"paper: {paper_range[0]:+.2f} to {paper_range[1]:+.2f} over divergences",
                             **PAPER_RANGE))
    columns = min(len(handles), 3 * len(pairs))  # a narrow figure's legend in rows, within its width
    rows = -(-len(handles) // columns)
    height = fig.get_figheight()
    top = 1 - (0.25 + 0.2 * rows) / height  # the panels below the legend's rows and the title
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.005, top), ncol=columns, fontsize=8,
               frameon=False)
    fig.text(0.01, top + (0.05 + 0.2 * rows) / height, f"Table {table}: KD w/ DSKD minus KD, per divergence",
             ha="left", va="bottom", fontsize=11, fontweight="bold")
    return fig
