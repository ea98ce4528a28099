"""Divergences between next-token distributions and the normalisation helpers they share (PAPER.md section 2).

Each divergence is a per-position function ``D(student_logits, teacher_logits, temperature=1.0, **options) -> [...]``
that returns the divergence at every position (summed over the vocabulary, not reduced over positions), with the
temperature applied to both sides, computed in float32 from ``log_softmax``; mixtures are built in log space. The
registry ``DIVERGENCES`` is keyed by the labels the paper's tables print (plus ``tvd``). Options: ``skew`` (0.1)
of ``skl``/``srkl``, ``threshold`` (0.5) of ``akl``; any other keyword is an error.
Methods evaluate them at the response positions only (``repro.methods.response_rows``); the trainer divides the
sums by the number of response tokens of the whole global batch.
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


def akl_head_gap(p_t: torch.Tensor, gap: torch.Tensor, threshold: float = 0.5, first_k: int = 64,
                 buckets: int = 4096) -> torch.Tensor:
    """AKL's head gap ``g_head`` [...]: the sum of ``gap`` [..., V] over the head of ``p_t`` [..., V] (PAPER.md
    section 2), found without sorting the vocabulary.

    The definition: sort ``p_t`` ascending, stably (ties in index order); the tail is the prefix whose cumulative sum
    is ``<= threshold``, the head the rest. Equivalently, with ``T = sum p_t``, the head is the ``c`` largest
    entries whose exclusive prefix sum in descending order is below ``T - threshold``, and among entries tied with
    the smallest of them, the ones of highest index (the stable ascending order puts them last). Two exact ways to
    find it without a sort: the ``first_k`` largest entries (``topk``) where the head ends among them (peaked
    rows); otherwise a histogram of ``p_t`` over ``buckets`` buckets of its float bits (the exponent and 8 mantissa
    bits, so a bucket spans values within 0.4% of each other) locates the bucket where the head ends, and only that
    bucket's entries are ordered (``_head_by_histogram``). Prefix sums in float64. Tested equal to the sorted
    definition, ties included.
    """
    vocab = p_t.shape[-1]
    lead = p_t.shape[:-1]
    p = p_t.reshape(-1, vocab)
    g = gap.reshape(-1, vocab)
    limit = p.double().sum(-1) - threshold  # head: exclusive descending prefix sum < limit
    out = torch.zeros(p.shape[0], dtype=gap.dtype, device=gap.device)
    rows = torch.arange(p.shape[0], device=p.device)
    if first_k < vocab:
        # the head can end within the first_k largest entries only where first_k copies of the largest reach the
        # limit: nearly flat rows skip the topk
        near = rows[p.amax(-1).double() * first_k >= limit]
        resolved = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
        if near.numel():
            every = near.numel() == p.shape[0]  # (no copies of the rows when all of them are near)
            values = (p if every else p[near]).topk(first_k, dim=-1).values.double()  # [n, k], descending
            covered = values.sum(-1) >= limit[near]  # the head ends within these k
            done = near[covered]
            if done.numel():
                out[done] = _head_from_candidates(p[done], g[done], values[covered], limit[done])
                resolved[done] = True
        rows = rows[~resolved]
    if rows.numel():
        every = rows.numel() == p.shape[0]  # (no copies of the rows when all of them are left)
        out[rows] = _head_by_histogram(p if every else p[rows], g if every else g[rows], limit[rows], buckets)
    return out.reshape(lead)


def _head_from_candidates(p: torch.Tensor, g: torch.Tensor, values: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
    """Head gap of rows ``p``/``g`` [n, V] whose head ends among their largest entries ``values`` [n, k] (float64,
    descending): the head size ``c`` and its smallest value ``v``; then every entry from ``v`` up, less the
    entries tied with ``v`` that the head does not take (the lowest-index ones), found only in rows with such
    ties."""
    exclusive = values.cumsum(-1) - values
    count = (exclusive < limit[:, None]).sum(-1)  # head entries among the values (0: the head is empty)
    smallest = values.gather(-1, (count - 1).clamp_min(0)[:, None]).to(p.dtype)  # [n, 1]
    at_least = p >= smallest
    out = torch.where(count > 0, (g * at_least).sum(-1), 0.0)
    excess = at_least.sum(-1) - count  # tied entries beyond the head: the lowest-index ones are not in it
    rows = ((excess > 0) & (count > 0)).nonzero().squeeze(-1)
    if rows.numel():
        tied = p[rows] == smallest[rows]
        from_left = tied.cumsum(-1)
        dropped = tied & (from_left <= excess[rows, None])
        out[rows] -= (g[rows] * dropped).sum(-1)
    return out


def _head_by_histogram(p: torch.Tensor, g: torch.Tensor, limit: torch.Tensor, buckets: int) -> torch.Tensor:
    """Head gaps [n] of rows [n, V] located by a histogram over the float bits of ``p`` (non-negative float32: their
    bit patterns are ordered as the values).

    The histogram over the exponent and 8 mantissa bits (``buckets`` buckets from the largest value down, a bucket
    spanning values within 0.4% of each other; the smallest values share the last) gives the mass and the gap of
    every bucket, so the bucket where the head ends is found with one prefix sum; the buckets above it are wholly
    in the head. Only that bucket's entries are extracted (``nonzero``) and ordered, by value, then index, both
    descending (the order in which the stable ascending sort's tail leaves them), every row's at once; a perfectly
    flat row, whose one bucket is the whole row, is sorted whole, as the definition does."""
    n = p.shape[0]
    keys = p.float().contiguous().view(torch.int32) >> 15
    bucket = (keys.amax(-1, keepdim=True) - keys).clamp_(max=buckets - 1).long()  # 0: the largest values
    mass = p.new_zeros(n, buckets, dtype=torch.float64).scatter_add_(1, bucket, p.double())
    gaps = g.new_zeros(n, buckets).scatter_add_(1, bucket, g)
    inclusive = mass.cumsum(-1)
    where = (inclusive < limit[:, None]).sum(-1).clamp_(max=buckets - 1)  # the bucket where the head ends
    above = (inclusive - mass).gather(-1, where[:, None]).squeeze(-1)
    gap_above = (gaps.cumsum(-1) - gaps).gather(-1, where[:, None]).squeeze(-1)
    rows, cols = (bucket == where[:, None]).nonzero(as_tuple=True)  # rows ascending, then columns ascending
    rows, cols = rows.flip(0), cols.flip(0)  # columns descending within a row
    order = p[rows, cols].argsort(descending=True, stable=True)  # by value descending, ties keep the column order
    rows, cols = rows[order], cols[order]
    order = rows.argsort(stable=True)  # grouped by row again, each row's order kept
    rows, cols = rows[order], cols[order]
    counts = torch.bincount(rows, minlength=n)
    rank = torch.arange(rows.numel(), device=p.device) - (counts.cumsum(0) - counts)[rows]
    width = int(counts.max()) if rows.numel() else 0
    values = torch.full((n, width), -1.0, dtype=torch.float64, device=p.device)  # -1: no entry
    values[rows, rank] = p[rows, cols].double()
    gap_of = g.new_zeros(n, width)
    gap_of[rows, rank] = g[rows, cols]
    member = values >= 0
    exclusive = above[:, None] + (values * member).cumsum(-1) - values * member
    head = member & (exclusive < limit[:, None])
    out = gap_above + (gap_of * head).sum(-1)
    return torch.where(limit > 0, out, 0.0)


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


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of ``logits`` [B,L,V] against ``labels`` [B,L], in float32."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                             reduction="sum")
