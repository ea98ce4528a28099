"""Divergences between next-token distributions, and the shared masking/normalisation helper (PAPER.md section 2).

Each divergence is a per-token function ``D(student_logits, teacher_logits, temperature) -> [...]`` that returns
the divergence at every position (summed over the vocabulary), computed in float32 from ``log_softmax``. The
registry ``DIVERGENCES`` is keyed by the labels the paper's tables print. ``masked_sum`` is the one place where
positions are masked; the trainer divides by the number of response tokens of the whole global batch.
"""
from __future__ import annotations

from typing import Callable

import torch

from .data import IGNORE


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Forward KL per token, ``sum_v p_t (log p_t - log p_s)`` with ``p = softmax(z / tau)`` (PAPER.md section 2).

    Shapes: ``student_logits`` and ``teacher_logits`` [..., V]; returns [...] in float32. Vocabulary entries where
    either side has an infinite logit contribute zero (they are masked, not propagated).
    """
    log_ps = _log_probs(student_logits, temperature)
    log_pt = _log_probs(teacher_logits, temperature)
    terms = log_pt.exp() * (log_pt - log_ps)
    infinite = torch.isinf(student_logits) | torch.isinf(teacher_logits)
    return terms.masked_fill(infinite, 0.0).sum(-1)


Divergence = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
DIVERGENCES: dict[str, Divergence] = {
    "kl": forward_kl,
}


def get_divergence(name: str) -> Divergence:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; expected one of {sorted(DIVERGENCES)}") from None


def masked_sum(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` [B,L] over the positions whose label [B,L] is not IGNORE (prompt and padding excluded).

    Masked positions are selected out rather than multiplied by zero, so a NaN or inf there cannot leak in.
    """
    return values[labels != IGNORE].sum()


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of ``logits`` [B,L,V] against ``labels`` [B,L], in float32."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                             reduction="sum")
