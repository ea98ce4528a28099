"""Lean divergences: the same values and gradients as ``repro.losses.DIVERGENCES``, with bounded memory.

Each divergence of the registry is a function of the student's log-probabilities ``l = log_softmax(z_s / tau)``
given the teacher's ``m = log_softmax(z_t / tau)`` (teacher detached). Its gradient with respect to the student
logits is ``(g - p_s * sum_v g) / tau`` with ``g = df/dl`` elementwise (the chain rule through the log-softmax), and
``g`` has a closed form for every divergence (below). So a lean divergence is one ``torch.autograd.Function`` that
walks the positions in chunks, forward and backward, keeping only its two inputs (and AKL's detached weights)
instead of the half-dozen vocabulary-sized intermediates autograd stores per position; the backward pass recomputes
the log-softmaxes chunk by chunk. Entries with infinite logits are zeroed on both passes, as ``repro.losses`` does.

``g = df/dl`` per divergence, with ``p = e^l``, ``q = e^m``, ``a`` the log of the mixture of the divergence:
- ``kl``: ``-q``;  ``rkl``: ``p (l - m + 1)``;  ``js``: ``0.5 p (l - a)``, ``a = log((p + q) / 2)``;
- ``skl``: ``-(1 - s) p q / e^a``, ``a = log(s q + (1 - s) p)``;
- ``srkl``: ``p (l - a + 1 - s p / e^a)``, ``a = log(s p + (1 - s) q)``;
- ``akl``: ``w g_kl + (1 - w) g_rkl`` with AKL's detached weights; ``tvd``: ``0.5 p sign(p - q)``.
Tested equal to the autograd computation, values and gradients, for every divergence (``-inf`` logits, fully masked
rows and bf16 inputs included).
"""
from __future__ import annotations

import math

import torch

from . import losses

# Positions per chunk: chunk x vocabulary float32 temporaries stay near this many entries (512 KB each), so a
# chunk's few temporaries stay in a core's L2 cache (2^17 was the fastest of 2^16 ... 2^20 at 50,257 entries).
CHUNK_ENTRIES = 1 << 17


def _mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    return losses._log_mix(log_p, log_q, weight_p)


def _value_and_grad(name: str, ls: torch.Tensor, m: torch.Tensor, infinite: torch.Tensor, options: dict,
                    weights: torch.Tensor | None, need_grad: bool,
                    p: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """On one chunk of log-probabilities [n, V]: the divergence [n] (forward pass, ``need_grad`` False) or
    ``df/dl`` [n, V] (backward pass, ``need_grad`` True), each computed only when asked for; ``p``: ``exp(ls)``
    when the caller has it."""
    if p is None and name in ("rkl", "js", "srkl", "akl", "tvd"):
        p = ls.exp()
    value = g = None
    if name == "kl":
        if need_grad:
            g = m.exp().neg_()
        else:
            value = m.exp().mul_(m - ls)  # losses._kl_terms(m, ls)
    elif name == "rkl":
        if need_grad:
            g = p * (ls - m + 1)
        else:
            value = losses._kl_terms(ls, m)
    elif name == "js":
        a = _mix(ls, m, 0.5)
        if need_grad:
            g = 0.5 * p * (ls - a)
        else:
            value = 0.5 * (losses._kl_terms(m, a) + losses._kl_terms(ls, a))
    elif name == "skl":
        skew = options.get("skew", 0.1)
        a = _mix(m, ls, skew)
        if need_grad:  # -(1 - s) p q / mixture; nothing at s = 1, where the mixture is the teacher
            g = -torch.exp(math.log1p(-skew) + ls + m - a) if skew < 1 else torch.zeros_like(ls)
        else:
            value = losses._kl_terms(m, a)
    elif name == "srkl":
        skew = options.get("skew", 0.1)
        a = _mix(ls, m, skew)
        if need_grad:
            share = torch.exp(math.log(skew) + ls - a) if skew > 0 else 0.0  # s p / mixture
            g = p * (ls - a + 1 - share)
        else:
            value = losses._kl_terms(ls, a)
    elif name == "akl":
        w = weights[:, None]
        if need_grad:
            g = w * -m.exp() + (1 - w) * p * (ls - m + 1)
        else:
            value = w * losses._kl_terms(m, ls) + (1 - w) * losses._kl_terms(ls, m)
    elif name == "tvd":
        q = m.exp()
        if need_grad:
            g = 0.5 * p * torch.sign(p - q)
        else:
            value = 0.5 * (q - p).abs()
    else:
        raise ValueError(f"no lean form of divergence {name!r}")
    if value is not None:
        value = (value if infinite is None else value.masked_fill(infinite, 0.0)).sum(-1)
    if g is not None and infinite is not None:
        g = torch.where(infinite, 0.0, g)
    return value, g


def _log_probs(z: torch.Tensor, temperature: float, lse: torch.Tensor | None = None):
    """Float32 log-probabilities of ``z / temperature`` [n, V], the mask of infinite logits (None when there is
    none: the common case skips every masking pass) and the log-normaliser [n, 1] (given: the forward pass found
    the chunk finite; no reduction pass, no check).

    Whether a chunk holds an infinite logit is read from its sum (one pass; finite exactly when every entry is,
    unless finite entries overflow it, which only sends the chunk down the masked path, whose values are the same)."""
    z = z.float()
    if lse is None and not torch.isfinite(z.sum()):  # a given normaliser comes from a chunk found finite
        infinite = torch.isinf(z)
        if infinite.any():
            log_p, infinite = losses._prepare(z, temperature)
            return log_p, infinite, None
    scaled = z / temperature
    lse = torch.logsumexp(scaled, -1, keepdim=True) if lse is None else lse
    return scaled.sub_(lse), None, lse


def _either(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return a | b


def _akl_weight(ls: torch.Tensor, m: torch.Tensor, infinite: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """AKL's detached weight of KL per row (``repro.losses.akl_weights``; no masking pass when nothing is
    infinite)."""
    with torch.no_grad():
        p_s, p_t = ls.exp(), m.exp()
        if infinite is not None:
            p_s.masked_fill_(infinite, 0.0)
            p_t.masked_fill_(infinite, 0.0)
        gap = p_s.sub_(p_t).abs_()  # |p_t - p_s|
        total = gap.sum(-1)  # g_head + g_tail
        g_head = losses.akl_head_gap(p_t, gap, threshold)
        tiny = torch.finfo(torch.float32).tiny
        return torch.where(total > 0, g_head / total.clamp_min(tiny), 0.5).clamp(0.0, 1.0)


class _Lean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, temperature, name, options):
        shape, vocab = student_logits.shape[:-1], student_logits.shape[-1]
        z_s, z_t = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
        chunk = max(1, CHUNK_ENTRIES // max(vocab, 1))
        n = z_s.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=z_s.device)
        weights = torch.empty_like(out) if name == "akl" else None
        # per-row log-normalisers of rows without infinite logits (NaN: recompute), so backward skips reductions
        lse = torch.full((2, n, 1), float("nan"), device=z_s.device)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            ls, inf_s, lse_s = _log_probs(z_s[rows], temperature)
            m, inf_t, lse_t = _log_probs(z_t[rows], temperature)
            if lse_s is not None:
                lse[0, rows] = lse_s
            if lse_t is not None:
                lse[1, rows] = lse_t
            infinite = _either(inf_s, inf_t)
            w = None
            if name == "akl":
                w = _akl_weight(ls, m, infinite, options.get("threshold", 0.5))
                weights[rows] = w
            out[rows] = _value_and_grad(name, ls, m, infinite, options, w, need_grad=False)[0]
        ctx.save_for_backward(student_logits, teacher_logits, weights, lse)
        ctx.temperature, ctx.name, ctx.options = temperature, name, options
        return out.reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        student_logits, teacher_logits, weights, lse = ctx.saved_tensors
        vocab = student_logits.shape[-1]
        z_s, z_t = student_logits.reshape(-1, vocab), teacher_logits.reshape(-1, vocab)
        grad_out = grad_out.reshape(-1).float()
        grad = torch.empty(z_s.shape, dtype=student_logits.dtype, device=z_s.device)
        chunk = max(1, CHUNK_ENTRIES // max(vocab, 1))
        for start in range(0, z_s.shape[0], chunk):
            rows = slice(start, start + chunk)
            known = [None if torch.isnan(lse[k, rows]).any() else lse[k, rows] for k in (0, 1)]
            ls, inf_s, _ = _log_probs(z_s[rows], ctx.temperature, known[0])
            m, inf_t, _ = _log_probs(z_t[rows], ctx.temperature, known[1])
            w = weights[rows] if weights is not None else None
            # unmasked p is enough: g is zero and g_z is zeroed below wherever a student logit is infinite
            p = ls.exp()
            _, g = _value_and_grad(ctx.name, ls, m, _either(inf_s, inf_t), ctx.options, w, need_grad=True, p=p)
            # g_z = (g - p * sum_v g) / tau * grad_out, in place over the chunk's temporaries
            g_z = p.mul_(g.sum(-1, keepdim=True)).neg_().add_(g).div_(ctx.temperature)
            if inf_s is not None:  # infinite logits take no gradient (as through nan_to_num)
                g_z = g_z.masked_fill_(inf_s, 0.0)
            if grad.dtype == g_z.dtype:
                torch.mul(g_z, grad_out[rows, None], out=grad[rows])
            else:
                grad[rows] = g_z.mul_(grad_out[rows, None])
        return grad.reshape(student_logits.shape), None, None, None, None


def lean_divergence(name: str):
    """The lean form of registry divergence ``name``: ``f(student_logits, teacher_logits, temperature=1.0,
    **options) -> [...]``, equal to ``repro.losses.DIVERGENCES[name]``; the teacher side takes no gradient (where it
    asks for one, the plain autograd form is used)."""
    plain = losses.get_divergence(name)

    def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                   **options) -> torch.Tensor:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        allowed = {"skl": {"skew"}, "srkl": {"skew"}, "akl": {"threshold"}}.get(name, set())
        if set(options) - allowed:
            return plain(student_logits, teacher_logits, temperature, **options)  # the plain form names the error
        if teacher_logits.requires_grad or student_logits.shape != teacher_logits.shape:
            return plain(student_logits, teacher_logits, temperature, **options)
        return _Lean.apply(student_logits, teacher_logits.detach(), temperature, name, dict(options))

    divergence.__name__ = f"lean_{name}"
    divergence.__doc__ = f"Lean form of ``{name}`` (``repro.lean``): same values and gradients, bounded memory."
    return divergence


LEAN = {name: lean_divergence(name) for name in losses.DIVERGENCES}
