"""Figures 1-3 and the per-cell training curves, drawn with matplotlib/seaborn and saved as PNG and PDF.

Each ``plot_*`` function takes the machine-readable results (plain dicts/lists, as the analysis steps write them
to JSON) and returns a matplotlib figure; ``save_figure`` writes it atomically in both formats. No torch import.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .io import atomic_path
from .names import DIVERGENCE_TITLES

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
