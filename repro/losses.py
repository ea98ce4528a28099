"""Divergences between next-token distributions, and the shared masking/normalisation helper (PAPER.md section 2).

Each divergence is a per-position function ``D(student_logits, teacher_logits, temperature=1.0, **options) -> [...]``
that returns the divergence at every position (summed over the vocabulary, not reduced over positions), with the
temperature applied to both sides, computed in float32 from ``log_softmax``; mixtures are built in log space. The
registry ``DIVERGENCES`` is keyed by the labels the paper's tables print (plus ``tvd``). Options: ``skew`` (0.1)
of ``skl``/``srkl``, ``threshold`` (0.5) of ``akl``; any other keyword is an error. ``masked_sum`` is the one
place where positions are masked; the trainer divides by the number of response tokens of the whole global batch.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .data import IGNORE


def _prepare(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 log-probabilities of ``logits / temperature`` [..., V], and the mask of infinite logits [..., V].

    Infinite logits are replaced by the most extreme finite float32 values before the softmax, so a row that is
    entirely ``-inf`` gives finite (uniform) values instead of NaN, in the forward and in the backward pass; the
    divergences then zero every vocabulary entry that was infinite on either side (PAPER.md section 2).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = logits.float()
    infinite = torch.isinf(z)
    finfo = torch.finfo(torch.float32)
    z = torch.nan_to_num(z, posinf=finfo.max, neginf=finfo.min)
    return torch.log_softmax(z / temperature, dim=-1), infinite


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-entry terms of KL(p || q) = sum_v p (log p - log q), from log-probabilities [..., V]."""
    return log_p.exp() * (log_p - log_q)


def _log_mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    """log(weight_p * p + (1 - weight_p) * q), computed in log space (no log of a sum of probabilities)."""
    if weight_p <= 0:
        return log_q
    if weight_p >= 1:
        return log_p
    return torch.logaddexp(log_p + math.log(weight_p), log_q + math.log1p(-weight_p))


def _reduce(terms: torch.Tensor, infinite: torch.Tensor) -> torch.Tensor:
    return terms.masked_fill(infinite, 0.0).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``kl``: forward KL per position, ``sum_v p_t (log p_t - log p_s)`` with ``p = softmax(z / tau)``.

    Shapes: logits [..., V] on both sides; returns [...] in float32 (PAPER.md section 2, table of divergences).
    """
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return _reduce(_kl_terms(log_pt, log_ps), inf_s | inf_t)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``rkl``: reverse KL per position, ``sum_v p_s (log p_s - log p_t)``. Shapes as ``forward_kl``."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return _reduce(_kl_terms(log_ps, log_pt), inf_s | inf_t)


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  temperature: float = 1.0) -> torch.Tensor:
    """``js``: ``0.5 [KL(p_t || M) + KL(p_s || M)]`` with ``M = (p_s + p_t) / 2``. Shapes as ``forward_kl``."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    log_m = _log_mix(log_ps, log_pt, 0.5)
    return 0.5 * _reduce(_kl_terms(log_pt, log_m) + _kl_terms(log_ps, log_m), inf_s | inf_t)


def skew_forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                    skew: float = 0.1) -> torch.Tensor:
    """``skl`` (DistiLLM): ``KL(p_t || skew * p_t + (1 - skew) * p_s)``, skew 0.1. Shapes as ``forward_kl``."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return _reduce(_kl_terms(log_pt, _log_mix(log_pt, log_ps, skew)), inf_s | inf_t)


def skew_reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                    skew: float = 0.1) -> torch.Tensor:
    """``srkl``: ``KL(p_s || (1 - skew) * p_t + skew * p_s)``, skew 0.1. Shapes as ``forward_kl``."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return _reduce(_kl_terms(log_ps, _log_mix(log_ps, log_pt, skew)), inf_s | inf_t)


def akl_head_gap(p_t: torch.Tensor, gap: torch.Tensor, threshold: float = 0.5, first_k: int = 64) -> torch.Tensor:
    """AKL's head gap ``g_head`` [...]: the sum of ``gap`` [..., V] over the head of ``p_t`` [..., V] (PAPER.md
    section 2), found without sorting the vocabulary.

    The definition: sort ``p_t`` ascending, stably (ties in index order); the tail is the prefix whose cumulative sum
    is ``<= threshold``, the head the rest. Equivalently, with ``T = sum p_t``, the head is the ``c`` largest
    entries whose exclusive prefix sum in descending order is below ``T - threshold``, and among entries tied with
    the smallest of them, the ones of highest index (the stable ascending order puts them last). So the largest
    entries are selected by ``topk`` (``first_k`` of them, then 16 times as many for the rows whose head is longer,
    and a full stable sort only for rows whose head exceeds a quarter of the vocabulary); prefix sums in float64.
    Tested equal to the sorted definition, ties included.
    """
    vocab = p_t.shape[-1]
    lead = p_t.shape[:-1]
    p = p_t.reshape(-1, vocab)
    g = gap.reshape(-1, vocab)
    limit = p.double().sum(-1) - threshold  # head: exclusive descending prefix sum < limit
    out = torch.zeros(p.shape[0], dtype=gap.dtype, device=gap.device)
    todo = torch.arange(p.shape[0], device=p.device)
    k = first_k
    while todo.numel():
        if 4 * k >= vocab:  # long heads: the sorted definition itself, on these rows only
            rows = todo
            ordered, order = p[rows].sort(dim=-1, stable=True)
            tail = ordered.double().cumsum(-1) <= threshold
            out[rows] = (g[rows].gather(-1, order) * ~tail).sum(-1)
            break
        values = p[todo].topk(k, dim=-1).values.double()  # [n, k], descending
        exclusive = values.cumsum(-1) - values
        covered = values.sum(-1) >= limit[todo]  # the head ends within these k
        rows = todo[covered]
        if rows.numel():
            count = (exclusive[covered] < limit[rows, None]).sum(-1)  # head size c (0 only if nothing qualifies)
            smallest = values[covered].gather(-1, (count - 1).clamp_min(0)[:, None]).to(p.dtype)  # [n, 1]
            row_p = p[rows]
            above = row_p > smallest
            tied = row_p == smallest
            wanted = count[:, None] - above.sum(-1, keepdim=True)  # tied entries that belong to the head
            from_right = tied.flip(-1).cumsum(-1).flip(-1)  # among tied entries: how many at or after this index
            head = above | (tied & (from_right <= wanted))
            out[rows] = torch.where(count > 0, (g[rows] * head).sum(-1), 0.0)
        todo = todo[~covered]
        k *= 16
    return out.reshape(lead)


def akl_weights(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The detached AKL weights ``(w_kl, w_rkl)`` [...] of Wu et al. 2024 (PAPER.md section 2).

    Sort ``p_t`` ascending; the tail is where the cumulative sum of the sorted ``p_t`` is ``<= threshold``, the
    head the rest; ``g_head``/``g_tail`` sum ``|p_t - p_s|`` over each; ``w_kl = g_head / (g_head + g_tail)``,
    ``w_rkl = g_tail / (g_head + g_tail)`` (0.5 each where both gaps are zero, where the divergences are zero too).
    """
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return _akl_weights(log_ps, log_pt, inf_s | inf_t, threshold)


def _akl_weights(log_ps: torch.Tensor, log_pt: torch.Tensor, infinite: torch.Tensor,
                 threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        p_s = log_ps.exp().masked_fill(infinite, 0.0)
        p_t = log_pt.exp().masked_fill(infinite, 0.0)
        gap = (p_t - p_s).abs()
        total = gap.sum(-1)  # g_head + g_tail
        g_head = akl_head_gap(p_t, gap, threshold)
        safe = total > 0
        w_kl = torch.where(safe, g_head / total.clamp_min(torch.finfo(torch.float32).tiny), 0.5).clamp(0.0, 1.0)
        return w_kl, 1.0 - w_kl


def adaptive_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                threshold: float = 0.5) -> torch.Tensor:
    """``akl``: ``w_kl * KL + w_rkl * RKL`` with the detached weights of ``akl_weights``. Shapes as ``forward_kl``;
    both sides' log-probabilities are computed once and shared by the weights and the two divergences."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    infinite = inf_s | inf_t
    w_kl, w_rkl = _akl_weights(log_ps.detach(), log_pt.detach(), infinite, threshold)
    return w_kl * _reduce(_kl_terms(log_pt, log_ps), infinite) + w_rkl * _reduce(_kl_terms(log_ps, log_pt), infinite)


def total_variation(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    temperature: float = 1.0) -> torch.Tensor:
    """``tvd`` (extra): total variation distance ``0.5 sum_v |p_t - p_s|``. Shapes as ``forward_kl``."""
    log_ps, inf_s = _prepare(student_logits, temperature)
    log_pt, inf_t = _prepare(teacher_logits, temperature)
    return 0.5 * _reduce((log_pt.exp() - log_ps.exp()).abs(), inf_s | inf_t)


Divergence = Callable[..., torch.Tensor]
DIVERGENCES: dict[str, Divergence] = {
    "kl": forward_kl,
    "rkl": reverse_kl,
    "js": js_divergence,
    "skl": skew_forward_kl,
    "srkl": skew_reverse_kl,
    "akl": adaptive_kl,
    "tvd": total_variation,
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
