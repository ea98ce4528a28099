"""Lean divergences (repro.lean) against the plain autograd computation of the registry: values and gradients for
every divergence, with -inf logits, fully masked rows, bf16 inputs and chunk boundaries."""
import pytest
import torch

from repro import lean, losses
from repro.losses import DIVERGENCES

ALL = sorted(DIVERGENCES)


def _both(name, z_s, z_t, tau, **options):
    out = []
    for fn in (DIVERGENCES[name], lean.LEAN[name]):
        x = z_s.detach().clone().requires_grad_()
        value = fn(x, z_t, tau, **options)
        weights = torch.linspace(0.5, 2.0, value.numel()).reshape(value.shape)  # a non-uniform upstream gradient
        (value * weights).sum().backward()
        out.append((value.detach(), x.grad))
    return out


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_lean_equals_plain_values_and_gradients(name, tau, monkeypatch):
    monkeypatch.setattr(lean, "CHUNK_ENTRIES", 3 * 41)  # chunks of 3 positions: boundaries inside the batch
    torch.manual_seed(7)
    z_s, z_t = 3 * torch.randn(2, 5, 41), 3 * torch.randn(2, 5, 41)
    z_t[0, 1, :6] = -float("inf")  # teacher -inf entries
    z_s[1, 2, 10:13] = -float("inf")  # student -inf entries
    z_t[1, 4] = -float("inf")  # a fully masked teacher row
    (plain, plain_grad), (fast, fast_grad) = _both(name, z_s, z_t, tau)
    assert torch.isfinite(fast).all() and torch.isfinite(fast_grad).all()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["skl", "srkl", "akl"])
def test_lean_options(name):
    torch.manual_seed(1)
    z_s, z_t = torch.randn(4, 30), torch.randn(4, 30)
    option = {"skl": {"skew": 0.3}, "srkl": {"skew": 0.0}, "akl": {"threshold": 0.2}}[name]
    (plain, plain_grad), (fast, fast_grad) = _both(name, z_s, z_t, 2.0, **option)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):
        lean.LEAN["kl"](z_s, z_t, 2.0, skew=0.1)


@pytest.mark.parametrize("name", ALL)
def test_lean_bf16_inputs(name):
    torch.manual_seed(2)
    z_s, z_t = (2 * torch.randn(6, 50)).bfloat16(), (2 * torch.randn(6, 50)).bfloat16()
    (plain, plain_grad), (fast, fast_grad) = _both(name, z_s, z_t, 2.0)
    assert fast.dtype == torch.float32 and fast_grad.dtype == torch.bfloat16
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_grad.float(), plain_grad.float(), rtol=2e-2, atol=1e-4)


def test_teacher_side_with_a_gradient_uses_the_plain_form():
    """A teacher side that asks for a gradient gets the plain autograd form: both sides' gradients equal the
    registry's."""
    torch.manual_seed(4)
    values = torch.randn(3, 9), torch.randn(3, 9)
    grads = []
    for fn in (lean.LEAN["js"], DIVERGENCES["js"]):
        z_s, z_t = (v.clone().requires_grad_(True) for v in values)
        (fn(z_s, z_t, 2.0) * torch.arange(1.0, 4.0)).sum().backward()
        grads.append((z_s.grad, z_t.grad))
    (lean_s, lean_t), (plain_s, plain_t) = grads
    assert lean_t is not None and lean_t.abs().sum() > 0
    torch.testing.assert_close(lean_s, plain_s)
    torch.testing.assert_close(lean_t, plain_t)


def test_without_a_student_gradient_no_buffer_is_kept_and_the_values_agree():
    torch.manual_seed(3)
    z_s, z_t = torch.randn(4, 33), torch.randn(4, 33)
    with torch.no_grad():
        fast = lean.LEAN["akl"](z_s, z_t, 2.0)
    torch.testing.assert_close(fast, DIVERGENCES["akl"](z_s, z_t, 2.0), rtol=1e-5, atol=1e-6)
    assert not fast.requires_grad


def test_a_second_backward_through_the_same_graph_is_refused():
    z_s, z_t = torch.randn(3, 9, requires_grad=True), torch.randn(3, 9)
    value = lean.LEAN["kl"](z_s, z_t, 2.0).sum()
    value.backward(retain_graph=True)
    first = z_s.grad.clone()
    with pytest.raises(RuntimeError, match="backward runs once"):
        value.backward()
    z_s.grad = None
    lean.LEAN["kl"](z_s, z_t, 2.0).sum().backward()  # a new graph is fine
    torch.testing.assert_close(z_s.grad, first)


def _ce_case():
    torch.manual_seed(5)
    z = 3 * torch.randn(2, 6, 37)
    z[0, 2, 4:9] = -float("inf")  # -inf entries away from the label
    labels = torch.randint(0, 37, (2, 6))
    labels[0, 2] = 1
    labels[1, :2] = losses.IGNORE  # ignored positions
    return z, labels


def test_lean_cross_entropy_equals_the_plain_one(monkeypatch):
    monkeypatch.setattr(lean, "CHUNK_ENTRIES", 5 * 37)
    z, labels = _ce_case()
    grads = []
    for fn in (losses.cross_entropy_sum, lean.cross_entropy_sum):
        x = z.clone().requires_grad_()
        value = fn(x, labels)
        (0.37 * value).backward()
        grads.append((value.detach(), x.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-7)
    assert (grads[1][1][1, :2] == 0).all()


@pytest.mark.parametrize("name", ALL)
def test_cross_entropy_and_divergence_in_one_pass_equal_the_separate_forms(name, monkeypatch):
    monkeypatch.setattr(lean, "CHUNK_ENTRIES", 4 * 37)
    z_s, labels = _ce_case()
    z_t = 2 * torch.randn(2, 6, 37)
    z_t[1, 3] = -float("inf")  # a fully masked teacher row
    results = []
    for fused in (False, True):
        x = z_s.clone().requires_grad_()
        if fused:
            objective, ce, kd = lean.weighted_ce_and_divergence(name, x, labels, z_t, 2.0, 0.3, 0.7)
            assert not ce.requires_grad and not kd.requires_grad
        else:
            ce, kd = losses.cross_entropy_sum(x, labels), DIVERGENCES[name](x, z_t, 2.0).sum()
            objective = 0.3 * ce + 0.7 * kd
        objective.backward()
        results.append((objective.detach(), ce.detach(), kd.detach(), x.grad))
    for fast, plain in zip(results[1], results[0]):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["kl", "akl"])
def test_teacher_logits_computed_in_blocks_equal_the_whole_tensor(name, monkeypatch):
    monkeypatch.setattr(lean, "CHUNK_ENTRIES", 3 * 29)  # chunks of 3 rows
    monkeypatch.setattr(lean, "HEAD_BLOCK_ENTRIES", 7 * 29)  # head blocks of 7 rows: chunks straddle blocks
    torch.manual_seed(9)
    hidden, weight = torch.randn(23, 5), torch.randn(29, 5)
    calls = []

    def head(h):
        calls.append(h.shape[0])
        return h @ weight.T

    z_s, labels = torch.randn(23, 29), torch.randint(0, 29, (23,))
    results = []
    for teacher in (hidden @ weight.T, lean.LazyLogits(hidden, head, 29)):
        x = z_s.clone().requires_grad_()
        objective, ce, kd = lean.weighted_ce_and_divergence(name, x, labels, teacher, 2.0, 0.5, 0.5)
        (objective + lean.LEAN[name](x, teacher, 2.0).sum()).backward()
        results.append((objective.detach(), ce, kd, x.grad))
    for fast, plain in zip(results[1], results[0]):
        torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    assert max(calls) <= 7 + 2 and sum(calls) < 3 * 23  # blocks, not the whole tensor, and few recomputations


@pytest.mark.parametrize("name", ["kl", "js"])
@pytest.mark.parametrize("bias", [False, True])
def test_losses_through_a_frozen_head_equal_autograd_through_the_head(name, bias, monkeypatch):
    monkeypatch.setattr(lean, "CHUNK_ENTRIES", 2 * 31)
    monkeypatch.setattr(lean, "HEAD_BLOCK_ENTRIES", 5 * 31)  # blocks of 5 rows
    torch.manual_seed(11)
    hidden, weight = torch.randn(13, 6), torch.randn(31, 6)
    head = lean.FrozenHead(weight, torch.randn(31) if bias else None)
    labels, z_t = torch.randint(0, 31, (13,)), 2 * torch.randn(13, 31)
    labels[3] = losses.IGNORE
    results = []
    for fast in (False, True):
        x = hidden.clone().requires_grad_()
        if fast:
            ce, hits = lean.head_cross_entropy_sum(x, head, labels)
            given, _ = lean.head_cross_entropy_sum(x, head, labels, logits=head(x).detach())
            div = lean.head_divergence(name, x, head, lean.LazyLogits(z_t, lambda h: h, 31), 2.0)
        else:
            z = head(x)
            ce = given = losses.cross_entropy_sum(z[None], labels[None])
            hits = ((z.argmax(-1) == labels) & (labels != losses.IGNORE)).sum().float()
            div = DIVERGENCES[name](z, z_t, 2.0)
        (ce + 0.5 * given + (div * torch.linspace(0.5, 1.5, 13)).sum()).backward()
        results.append((ce.detach(), hits, div.detach(), x.grad))
    for fast, plain in zip(results[1], results[0]):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
