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
from dataclasses import dataclass, field

import torch

from . import losses

# Positions per chunk: chunk x vocabulary float32 temporaries stay near this many entries (512 KB each), so a
# chunk's few temporaries stay in a core's L2 cache (2^17 was the fastest of 2^16 ... 2^20 at 50,257 entries).
CHUNK_ENTRIES = 1 << 17


# Rows of a teacher head computed at once (``LazyLogits``): blocks of about this many entries (16 MB in float32), so
# the head's product stays an efficient matrix product while the teacher's logits never exist whole.
HEAD_BLOCK_ENTRIES = 1 << 22


class LazyLogits:
    """A teacher's logits [N, V] as its hidden states [N, d] and a head (``hidden rows -> logits rows``), computed
    block by block where a lean function reads them: the same values, without an [N, V] tensor."""

    def __init__(self, hidden: torch.Tensor, head, n_vocab: int):
        self.hidden, self.head, self.n_vocab = hidden, head, n_vocab
        self.shape = torch.Size((*hidden.shape[:-1], n_vocab))
        self.requires_grad = False

    def detach(self) -> LazyLogits:
        return self

    def materialise(self) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.hidden)


class _Blocks:
    """Rows ``[start, stop)`` of a teacher's logits [N, V] (a tensor, or ``LazyLogits`` computed a block at a
    time, in increasing row order)."""

    def __init__(self, logits, vocab: int):
        self.logits, self.block, self.range = logits, None, (0, 0)
        self.size = max(1, HEAD_BLOCK_ENTRIES // max(vocab, 1))
        self.flat = logits.reshape(-1, vocab) if isinstance(logits, torch.Tensor) else None
        self.hidden = None if self.flat is not None else logits.hidden.reshape(-1, logits.hidden.shape[-1])

    def rows(self, start: int, stop: int) -> torch.Tensor:
        if self.flat is not None:
            return self.flat[start:stop]
        if not self.range[0] <= start or stop > self.range[1]:
            first = start
            last = min(max(stop, first + self.size), self.hidden.shape[0])
            with torch.no_grad():
                self.block, self.range = self.logits.head(self.hidden[first:last]), (first, last)
        return self.block[start - self.range[0]:stop - self.range[0]]


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


def _ce_chunk(z: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor | None, scale: float,
              count_hits: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token cross-entropy [n] of one chunk of logits ``z`` [n, V] against ``labels`` [n] (``IGNORE``: 0), as
    ``torch.nn.functional.cross_entropy`` computes it in float32, and (``count_hits``) whether the argmax is the
    label [n]; with ``grad`` [n, V] given, ``scale * (softmax(z) - onehot(label))`` (zero on ignored rows) is written
    there."""
    z = z.float()
    if torch.isfinite(z.sum()):
        log_p, p, _ = _softmax(z, 1.0)
    else:  # infinite logits: exactly the plain form's log-softmax (an infinite label entry gives an infinite loss)
        log_p = torch.log_softmax(z, -1)
        p = log_p.exp()
    keep = labels != losses.IGNORE
    index = labels.clamp_min(0)[:, None]
    value = -log_p.gather(-1, index).squeeze(-1) * keep
    hits = (z.argmax(-1) == labels) & keep if count_hits else None
    if grad is not None:
        p.scatter_add_(-1, index, torch.full_like(index, -1, dtype=p.dtype))
        torch.mul(p, keep[:, None] * scale, out=grad)
    return value, hits


@dataclass
class FrozenHead:
    """An output head ``logits = hidden @ weight.T + bias`` (weight [V, d]); detached where a lean loss uses it, so
    that it takes no gradient."""
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden.to(self.weight.dtype), self.weight, self.bias)


@dataclass(frozen=True)
class LeanSpec:
    """What a lean objective computes, everything but its tensors: the divergence term ``kd_weight * D(z_s, z_t)``
    (``divergence``: a ``repro.losses.DIVERGENCES`` name with its ``options`` at ``temperature``; None: no such
    term), the cross-entropy term ``ce_weight * CE(z_s, y)`` (read where labels are given), the frozen ``head`` the
    student's hidden states pass through (None: the student side is logits) and whether to count the positions whose
    argmax is the label (``count_hits``)."""
    divergence: str | None = None
    temperature: float = 1.0
    options: dict = field(default_factory=dict)
    kd_weight: float = 0.0
    ce_weight: float = 0.0
    head: FrozenHead | None = None
    count_hits: bool = False


def _lean(student: torch.Tensor, spec: LeanSpec, given: torch.Tensor | None = None, teacher=None,
          labels: torch.Tensor | None = None):
    """``_Lean`` on ``student`` (logits [N, V], or hidden states [N, d] under ``spec.head``) with the optional
    ``given`` student logits, ``teacher`` logits (or ``LazyLogits``) and ``labels``: (objective [N], divergence
    [N], cross-entropy [N], hits [N])."""
    return _Lean.apply(student, given, teacher, labels, spec)


class _Lean(torch.autograd.Function):
    """The objective ``w_div * D(z_s, z_t) + w_ce * CE(z_s, y)`` per position (either term optional), in one pass over
    the positions in chunks, with its gradient computed on the way into ONE float32 buffer; the backward pass only
    scales that buffer by the objective's gradient (in place) and returns it: no softmax is recomputed, and the
    buffer takes the place of the tensors a recomputing backward would keep (the two logit tensors of a
    divergence; the log-probabilities autograd keeps for a cross-entropy). The terms themselves come out as
    non-differentiable outputs for the log, with the count of positions whose argmax is the label.

    The student side is either logits [N, V] (``head`` None; buffer [N, V]) or hidden states [N, d] through a
    ``FrozenHead`` (logits ``given`` or computed a block of rows at a time; the buffer is the gradient [N, d] with
    respect to the hidden states, ``G @ W``, so no [N, V] tensor is kept). The teacher side is logits or
    ``LazyLogits`` (computed a block at a time)."""

    @staticmethod
    def forward(ctx, student, given, teacher, labels, spec: LeanSpec):
        name, temperature, options, head, count_hits = (spec.divergence, spec.temperature, spec.options, spec.head,
                                                        spec.count_hits)
        w_div, w_ce = spec.kd_weight, spec.ce_weight
        shape = student.shape[:-1]
        vocab = head.weight.shape[0] if head is not None else student.shape[-1]
        x = student.reshape(-1, student.shape[-1])
        n, device = x.shape[0], x.device
        z_t = _Blocks(teacher, vocab) if name is not None else None
        z_given = given.reshape(-1, vocab) if given is not None else None
        y = labels.reshape(-1) if labels is not None else None
        need_grad = ctx.needs_input_grad[0]
        chunk = max(1, CHUNK_ENTRIES // max(vocab, 1))
        lazy = head is not None or isinstance(teacher, LazyLogits)
        block = max(chunk, HEAD_BLOCK_ENTRIES // max(vocab, 1)) if lazy else max(n, 1)
        values = {key: torch.zeros(n if on else 0, dtype=torch.float32, device=device)
                  for key, on in (("div", name is not None), ("ce", y is not None))}
        hits = torch.zeros(n if y is not None and count_hits else 0, dtype=torch.bool, device=device)
        grad = None
        if need_grad:
            grad = torch.empty(x.shape if head is not None else (n, vocab), dtype=torch.float32, device=device)
        for first in range(0, n, block):
            last = min(first + block, n)
            if head is None:
                z_block, g_block = x[first:last], grad[first:last] if grad is not None else None
            else:
                if z_given is not None:
                    z_block = z_given[first:last]
                else:
                    with torch.no_grad():
                        z_block = head(x[first:last])
                g_block = torch.empty(z_block.shape, dtype=torch.float32, device=device) if need_grad else None
            for start in range(first, last, chunk):
                stop = min(start + chunk, last)
                z = z_block[start - first:stop - first]
                g_out = g_block[start - first:stop - first] if g_block is not None else None
                if y is not None:
                    values["ce"][start:stop], hit = _ce_chunk(z, y[start:stop], g_out, w_ce, count_hits)
                    if count_hits:
                        hits[start:stop] = hit
                if name is None:
                    continue
                ls, p, inf_s = _softmax(z, temperature)
                m, q, inf_t = _softmax(z_t.rows(start, stop), temperature)
                infinite = _either(inf_s, inf_t)
                w = _akl_weight(p, q, infinite, options.get("threshold", 0.5)) if name == "akl" else None
                values["div"][start:stop], g = _value_and_grad(name, ls, m, p, q, infinite, options, w, need_grad)
                if need_grad:
                    # unmasked p is enough: g is zero and g_z is zeroed below wherever a student logit is infinite;
                    # g_z = w_div * (g - p * sum_v g) / tau
                    g_z = p.mul_(g.sum(-1, keepdim=True).neg_()).add_(g).mul_(w_div / temperature)
                    if inf_s is not None:  # infinite logits take no gradient (as through nan_to_num)
                        g_z.masked_fill_(inf_s, 0.0)
                    if y is not None:
                        g_out.add_(g_z)
                    else:
                        g_out.copy_(g_z)
            if head is not None and need_grad:  # through the frozen head: d/dh = G @ W
                grad[first:last] = g_block.to(head.weight.dtype) @ head.weight
        terms = [weight * values[key] for key, weight, on in (("div", w_div, name is not None),
                                                               ("ce", w_ce, y is not None)) if on]
        objective = terms[0] if len(terms) == 1 else terms[0] + terms[1]
        ctx.grad, ctx.dtype, ctx.shape = grad, student.dtype, student.shape
        ctx.mark_non_differentiable(values["div"], values["ce"], hits)
        return objective.reshape(shape), values["div"], values["ce"], hits

    @staticmethod
    def backward(ctx, grad_out, *_):
        if ctx.grad is None:
            raise RuntimeError("a lean loss's backward runs once (its gradient buffer is scaled in place); use "
                               "repro.losses for a graph that is differentiated twice")
        grad, ctx.grad = ctx.grad, None
        grad.mul_(grad_out.reshape(-1, 1).float())
        return grad.to(ctx.dtype).reshape(ctx.shape), None, None, None, None


def _options_ok(name: str, options: dict) -> bool:
    return not set(options) - {"skl": {"skew"}, "srkl": {"skew"}, "akl": {"threshold"}}.get(name, set())


def lean_divergence(name: str):
    """The lean form of registry divergence ``name``: ``f(student_logits, teacher_logits, temperature=1.0,
    **options) -> [...]``, equal to ``repro.losses.DIVERGENCES[name]``; the teacher side (logits or
    ``LazyLogits``) takes no gradient (where it asks for one, the plain autograd form is used)."""
    plain = losses.get_divergence(name)

    def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                   **options) -> torch.Tensor:
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if (not _options_ok(name, options) or teacher_logits.requires_grad
                or student_logits.shape != teacher_logits.shape):  # the plain form names any error
            return plain(student_logits, _whole(teacher_logits), temperature, **options)
        spec = LeanSpec(divergence=name, temperature=temperature, options=dict(options), kd_weight=1.0)
        return _lean(student_logits, spec, teacher=teacher_logits.detach())[0]

    divergence.__name__ = f"lean_{name}"
    divergence.__doc__ = f"Lean form of ``{name}`` (``repro.lean``): same values and gradients, bounded memory."
    return divergence


LEAN = {name: lean_divergence(name) for name in losses.DIVERGENCES}


def _whole(logits) -> torch.Tensor:
    return logits.materialise() if isinstance(logits, LazyLogits) else logits


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of ``logits`` [..., V] against ``labels`` [...] (``IGNORE`` left out), equal to
    ``repro.losses.cross_entropy_sum`` in value and gradient, computed in chunks with one exponential per entry and
    one gradient buffer."""
    return _lean(logits, LeanSpec(ce_weight=1.0), labels=labels)[0].sum()


def weighted_ce_and_divergence(name: str, student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits,
                               temperature: float, ce_weight: float, kd_weight: float,
                               **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``ce_weight * CE + kd_weight * KD`` with ``CE = cross_entropy_sum(student_logits, labels)`` and ``KD =
    LEAN[name](student_logits, teacher_logits, temperature, **options).sum()``, in one pass over the student's
    logits and with one gradient buffer (KD's CE and divergence read the same logits); returns the objective (with
    its graph) and the detached ``CE`` and ``KD``, each equal to the separate forms in value and gradient."""
    if temperature <= 0 or not _options_ok(name, options) or teacher_logits.requires_grad \
            or student_logits.shape != teacher_logits.shape or name not in losses.DIVERGENCES:
        ce = cross_entropy_sum(student_logits, labels)  # the separate forms name any error
        kd = LEAN[name](student_logits, _whole(teacher_logits), temperature, **options).sum()
        return ce_weight * ce + kd_weight * kd, ce.detach(), kd.detach()
    spec = LeanSpec(divergence=name, temperature=temperature, options=dict(options), kd_weight=kd_weight,
                    ce_weight=ce_weight)
    objective, kd, ce, _ = _lean(student_logits, spec, teacher=teacher_logits.detach(), labels=labels)
    return objective.sum(), ce.sum(), kd.sum()


def head_divergence(name: str, hidden: torch.Tensor, head: FrozenHead, teacher_logits, temperature: float = 1.0,
                    **options) -> torch.Tensor:
    """``LEAN[name](head(hidden), teacher_logits, temperature, **options)`` [N] with the gradient flowing to
    ``hidden`` only (the head frozen, as DSKD's teacher-space projection uses the teacher's head): the student's
    logits are computed a block of rows at a time and never kept (the buffer is [N, d])."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    losses.get_divergence(name)
    if not _options_ok(name, options) or teacher_logits.requires_grad:
        return losses.get_divergence(name)(head(hidden), _whole(teacher_logits), temperature, **options)
    spec = LeanSpec(divergence=name, temperature=temperature, options=dict(options), kd_weight=1.0, head=head)
    return _lean(hidden, spec, teacher=teacher_logits.detach())[0]


def head_cross_entropy_sum(hidden: torch.Tensor, head: FrozenHead, labels: torch.Tensor,
                           logits: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cross_entropy_sum(head(hidden), labels)`` with the gradient flowing to ``hidden`` only (the head frozen,
    as DSKD's student-space projection uses the student's head), and the count of positions whose argmax is the
    label; ``logits``: ``head(hidden)`` when the caller has it (detached), else computed a block at a time."""
    spec = LeanSpec(ce_weight=1.0, head=head, count_hits=True)
    objective, _, _, hits = _lean(hidden, spec, given=None if logits is None else logits.detach(), labels=labels)
    return objective.sum(), hits.sum().float()
