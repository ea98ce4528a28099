"""Lean divergences (repro.lean) against the plain autograd computation of the registry: values and gradients for
every divergence, with -inf logits, fully masked rows, bf16 inputs and chunk boundaries."""
import pytest
import torch

from repro import lean
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
    z_s, z_t = torch.randn(3, 9, requires_grad=True), torch.randn(3, 9, requires_grad=True)
    lean.LEAN["js"](z_s, z_t, 2.0).sum().backward()
    assert z_t.grad is not None and z_s.grad is not None
