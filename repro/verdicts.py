"""The verdicts of the paper's claims, their words and colours: what the claims table (``repro.claims``) writes, and
the forest plot (``repro.figures``) and the report (``repro.report``) read.

A claim's difference is judged by its interval: it *holds* when the whole interval lies above the claim's threshold,
*does not hold* when it lies below, and is *undecided* otherwise; without an interval it is *not measured*.

Imports nothing of the package (and no torch).
"""
from __future__ import annotations

VERDICTS = ("holds", "does not hold", "undecided", "not measured")
# One colour per verdict for the forest plot and the report's labels (Okabe-Ito colours, apart for colour-blind
# readers; both also tell the verdicts apart without colour: markers in the plot, words and borders in the report).
VERDICT_COLORS = {"holds": "#009E73", "does not hold": "#D55E00", "undecided": "#6E6E6E", "not measured": "#B0B0B0"}


def verdict(low: float | None, high: float | None, threshold: float = 0.0) -> str:
    """``holds`` when the interval lies above ``threshold``, ``does not hold`` when it lies below, else
    ``undecided``; ``not measured`` without an interval."""
    if low is None or high is None:
        return "not measured"
    if low > threshold:
        return "holds"
    if high < threshold:
        return "does not hold"
    return "undecided"


def verdict_class(text: str) -> str:
    """The verdict a row's text starts with (``holds (2 of 2 repetitions)`` is ``holds``)."""
    return next(v for v in VERDICTS if text.startswith(v)) if text.startswith(VERDICTS) else "not measured"
