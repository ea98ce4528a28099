"""Lean divergences: the same values and gradients as ``repro.losses.DIVERGENCES``, with bounded memory.

Each divergence of the registry is a function of the student's log-probabilities ``l = log_softmax(z_s / tau)``
given the teacher's ``m = log_softmax(z_t / tau)`` (teacher detached). Its gradient with respect to the student
logits is ``(g - p_s * sum_v g) / tau`` with ``g = df/dl`` elementwise (the chain rule through the log-softmax), and
``g`` has a closed form for every divergence (below). So a lean divergence is one ``torch.autograd.Function`` that
walks the positions in chunks once, computing each chunk's value and its gradient together (the log-softmaxes,
exponentials and mixtures shared), and keeps one float32 gradient buffer instead of the half-dozen
vocabulary-sized intermediates autograd stores per position; the backward pass only scales that buffer. Entries
with infinite logits are zeroed on both passes, as ``repro.losses`` does.

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


def _value_and_grad(name: str, ls: torch.Tensor, m: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
                    infinite: torch.Tensor | None, options: dict, weights: torch.Tensor | None,
                    need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """On one chunk of log-probabilities ``ls``, ``m`` [n, V] with their probabilities ``p``, ``q``: the
    divergence [n] and, when ``need_grad``, ``df/dl`` [n, V] (the shared intermediates computed once)."""
    g = None
    if name == "kl":
        value = q * (m - ls)  # losses._kl_terms(m, ls)
        g = q.neg() if need_grad else None
    elif name == "rkl":
        diff = ls - m
        value = p * diff  # losses._kl_terms(ls, m)
        g = diff.add_(1).mul_(p) if need_grad else None
    elif name == "js":
        a = _mix(ls, m, 0.5)
        value = 0.5 * (q * (m - a) + p * (ls - a))
        g = 0.5 * p * (ls - a) if need_grad else None
    elif name == "skl":
        skew = options.get("skew", 0.1)
        a = _mix(m, ls, skew)
        value = q * (m - a)  # losses._kl_terms(m, a)
        if need_grad:  # -(1 - s) p q / mixture; nothing at s = 1, where the mixture is the teacher
            g = -torch.exp(math.log1p(-skew) + ls + m - a) if skew < 1 else torch.zeros_like(ls)
    elif name == "srkl":
        skew = options.get("skew", 0.1)
        a = _mix(ls, m, skew)
        value = p * (ls - a)  # losses._kl_terms(ls, a)
        if need_grad:
            share = torch.exp(math.log(skew) + ls - a) if skew > 0 else 0.0  # s p / mixture
            g = p * (ls - a + 1 - share)
    elif name == "akl":
        w = weights[:, None]
        diff = ls - m
        value = w * (q * -diff) + (1 - w) * (p * diff)  # w KL(t||s) + (1 - w) KL(s||t)
        g = w * -q + (1 - w) * p * (diff + 1) if need_grad else None
    elif name == "tvd":
        value = 0.5 * (q - p).abs()
        g = 0.5 * p * torch.sign(p - q) if need_grad else None
    else:
        raise ValueError(f"no lean form of divergence {name!r}")
    value = (value if infinite is None else value.masked_fill_(infinite, 0.0)).sum(-1)
    if g is not None and infinite is not None:
        g = g.masked_fill_(infinite, 0.0)
    return value, g


def _softmax(z: torch.Tensor, temperature: float):
    """Float32 log-probabilities and probabilities of ``z / temperature`` [n, V] from one exponential, and the mask
    of infinite logits (None when there is none: the common case skips every masking pass).

    Whether a chunk holds an infinite logit is read from its sum (one pass; finite exactly when every entry is,
    unless finite entries overflow it, which only sends the chunk down the masked path, whose values are the same)."""
    z = z.float()
    if not torch.isfinite(z.sum()):
        infinite = torch.isinf(z)
        if infinite.any():
            log_p, infinite = losses._prepare(z, temperature)
            return log_p, log_p.exp(), infinite
    shifted = z - z.amax(-1, keepdim=True)
    if temperature != 1:
        shifted.div_(temperature)
    e = shifted.exp()
    total = e.sum(-1, keepdim=True)
    return shifted.sub_(total.log()), e.div_(total), None


def _either(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return a if b is None else b
    return a | b


def _akl_weight(p: torch.Tensor, q: torch.Tensor, infinite: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """AKL's detached weight of KL per row (``repro.losses.akl_weights``) from the student's and teacher's
    probabilities (no masking pass when nothing is infinite)."""
    with torch.no_grad():
        p_s, p_t = (p, q) if infinite is None else (p.masked_fill(infinite, 0.0), q.masked_fill(infinite, 0.0))
        gap = (p_s - p_t).abs_()  # |p_t - p_s|
        total = gap.sum(-1)  # g_head + g_tail
        g_head = losses.akl_head_gap(p_t, gap, threshold)
        tiny = torch.finfo(torch.float32).tiny
        return torch.where(total > 0, g_head / total.clamp_min(tiny), 0.5).clamp(0.0, 1.0)


def _ce_chunk(z: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Token cross-entropy [n] of one chunk of logits ``z`` [n, V] against ``labels`` [n] (``IGNORE``: 0), as
    ``torch.nn.functional.cross_entropy`` computes it in float32; with ``grad`` [n, V] given, its gradient
    ``softmax(z) - onehot(label)`` (zero on ignored rows) is written there."""
    z = z.float()
    if torch.isfinite(z.sum()):
        log_p, p, _ = _softmax(z, 1.0)
    else:  # infinite logits: exactly the plain form's log-softmax (an infinite label entry gives an infinite loss)
        log_p = torch.log_softmax(z, -1)
        p = log_p.exp()
    keep = labels != losses.IGNORE
    index = labels.clamp_min(0)[:, None]
    value = -log_p.gather(-1, index).squeeze(-1) * keep
    if grad is not None:
        p.scatter_add_(-1, index, torch.full_like(index, -1, dtype=p.dtype))
        torch.mul(p, keep[:, None], out=grad)
    return value


class _Lean(torch.autograd.Function):
    """One pass over the positions, in chunks: each chunk's divergence (``name``; None: none) and, with ``labels``,
    its token cross-entropy at temperature 1 on the same student logits, and, when the student logits need a
    gradient, their gradients ``d/dz_s`` (per unit of output), written into float32 [N, V] buffers. The backward
    pass only scales those buffers by the outputs' gradients (in place) and returns them: no softmax is
    recomputed, and a buffer takes the place of the tensors a recomputing backward would keep (the two logit
    tensors of a divergence; the log-probabilities autograd keeps for a cross-entropy)."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, labels, temperature, name, options):
        shape, vocab = student_logits.shape[:-1], student_logits.shape[-1]
        z_s = student_logits.reshape(-1, vocab)
        z_t = teacher_logits.reshape(-1, vocab) if name is not None else None
        y = labels.reshape(-1) if labels is not None else None
        chunk = max(1, CHUNK_ENTRIES // max(vocab, 1))
        n, device = z_s.shape[0], z_s.device
        need_grad = ctx.needs_input_grad[0]

        def buffer(wanted):
            return torch.empty(z_s.shape, dtype=torch.float32, device=device) if wanted and need_grad else None

        out = torch.zeros(n, dtype=torch.float32, device=device)
        ce = torch.zeros(n if y is not None else 0, dtype=torch.float32, device=device)
        grad, grad_ce = buffer(name is not None), buffer(y is not None)
        for start in range(0, n, chunk):
            rows = slice(start, start + chunk)
            if y is not None:
                ce[rows] = _ce_chunk(z_s[rows], y[rows], grad_ce[rows] if grad_ce is not None else None)
            if name is None:
                continue
            ls, p, inf_s = _softmax(z_s[rows], temperature)
            m, q, inf_t = _softmax(z_t[rows], temperature)
            infinite = _either(inf_s, inf_t)
            w = _akl_weight(p, q, infinite, options.get("threshold", 0.5)) if name == "akl" else None
            out[rows], g = _value_and_grad(name, ls, m, p, q, infinite, options, w, need_grad)
            if need_grad:
                # unmasked p is enough: g is zero and g_z is zeroed below wherever a student logit is infinite;
                # g_z = (g - p * sum_v g) / tau, written into the buffer
                g_z = torch.mul(p, g.sum(-1, keepdim=True).neg_(), out=grad[rows]).add_(g).div_(temperature)
                if inf_s is not None:  # infinite logits take no gradient (as through nan_to_num)
                    g_z.masked_fill_(inf_s, 0.0)
        ctx.buffers, ctx.dtype, ctx.shape = (grad, grad_ce), student_logits.dtype, student_logits.shape
        ctx.mark_non_differentiable(*([ce] if y is None else []))
        return out.reshape(shape), ce.reshape(shape) if y is not None else ce

    @staticmethod
    def backward(ctx, grad_out, grad_out_ce):
        if ctx.buffers is None:
            raise RuntimeError("a lean divergence's backward runs once (its gradient buffer is scaled in place); "
                               "use repro.losses.DIVERGENCES for a graph that is differentiated twice")
        (grad, grad_ce), ctx.buffers = ctx.buffers, None
        total = None
        for buf, g_out in ((grad, grad_out), (grad_ce, grad_out_ce)):
            if buf is None or g_out is None:
                continue
            buf.mul_(g_out.reshape(-1, 1).float())
            total = buf if total is None else total.add_(buf)
        if total is None:
            total = torch.zeros(ctx.shape, dtype=torch.float32)
        return total.to(ctx.dtype).reshape(ctx.shape), None, None, None, None, None


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
        return _Lean.apply(student_logits, teacher_logits.detach(), None, temperature, name, dict(options))[0]

    divergence.__name__ = f"lean_{name}"
    divergence.__doc__ = f"Lean form of ``{name}`` (``repro.lean``): same values and gradients, bounded memory."
    return divergence


LEAN = {name: lean_divergence(name) for name in losses.DIVERGENCES}


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of ``logits`` [..., V] against ``labels`` [...] (``IGNORE`` left out), equal to
    ``repro.losses.cross_entropy_sum`` in value and gradient, computed in chunks with one exponential per entry and
    one gradient buffer."""
    dummy = logits.new_empty(0)
    return _Lean.apply(logits, dummy, labels, 1.0, None, {})[1].sum()


def ce_and_divergence(name: str, student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross_entropy_sum(student_logits, labels), LEAN[name](student_logits, teacher_logits, temperature,
    **options).sum())`` in one pass over the student's logits (KD's CE and divergence terms read the same logits),
    each equal to its separate form in value and gradient."""
    fused = (name in losses.DIVERGENCES and temperature > 0 and not teacher_logits.requires_grad
             and student_logits.shape == teacher_logits.shape
             and not set(options) - {"skl": {"skew"}, "srkl": {"skew"}, "akl": {"threshold"}}.get(name, set()))
    if not fused:  # the separate forms name any error
        return cross_entropy_sum(student_logits, labels), LEAN[name](student_logits, teacher_logits, temperature,
                                                                     **options).sum()
    divergence, ce = _Lean.apply(student_logits, teacher_logits.detach(), labels, temperature, name, dict(options))
    return ce.sum(), divergence.sum()

