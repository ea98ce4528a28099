import math

import pytest
import torch

from repro.losses import DIVERGENCES, IGNORE, cross_entropy_sum, forward_kl, masked_sum


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_at_equality_and_non_negative(name):
    torch.manual_seed(0)
    z = torch.randn(3, 5, 11)
    d = DIVERGENCES[name]
    assert torch.allclose(d(z, z.clone(), 2.0), torch.zeros(3, 5), atol=1e-6)
    other = torch.randn(3, 5, 11)
    assert (d(z, other, 2.0) >= -1e-6).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_finite_with_infinite_logits(name):
    z_s = torch.randn(2, 4, 6)
    z_t = torch.randn(2, 4, 6)
    z_s[..., 0] = -math.inf
    z_t[..., 1] = -math.inf
    z_t[1, 2, :] = -math.inf  # a fully masked row
    assert torch.isfinite(DIVERGENCES[name](z_s, z_t, 2.0)).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_bf16_inputs_are_computed_in_float32(name):
    z_s, z_t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    full = DIVERGENCES[name](z_s, z_t, 2.0)
    half = DIVERGENCES[name](z_s.bfloat16(), z_t.bfloat16(), 2.0)
    assert half.dtype == torch.float32
    assert torch.allclose(full, half, atol=0.05)


def test_forward_kl_by_hand():
    # one position, two-token vocabulary; tau = 2 halves the logits
    z_s = torch.tensor([[0.0, 2.0]])
    z_t = torch.tensor([[2.0, 0.0]])
    p_t = torch.softmax(z_t / 2, -1)[0].tolist()
    p_s = torch.softmax(z_s / 2, -1)[0].tolist()
    expected = sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s))
    assert forward_kl(z_s, z_t, 2.0).item() == pytest.approx(expected, rel=1e-6)
    # temperature 1 with e: p_t = (e/(1+e), 1/(1+e))
    a = math.e / (1 + math.e)
    assert forward_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), 1.0).item() == pytest.approx(
        a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)), rel=1e-6)


def test_masked_sum_ignores_prompt_padding_and_nan():
    values = torch.tensor([[1.0, float("nan"), 2.0], [4.0, 8.0, float("inf")]])
    labels = torch.tensor([[5, IGNORE, 6], [IGNORE, 7, IGNORE]])
    assert masked_sum(values, labels).item() == 11.0


def test_cross_entropy_sum_matches_definition():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, IGNORE, 4], [0, 2, IGNORE]])
    log_p = torch.log_softmax(logits, -1)
    expected = -(log_p[0, 0, 1] + log_p[0, 2, 4] + log_p[1, 0, 0] + log_p[1, 1, 2])
    assert cross_entropy_sum(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_gradient_reaches_student_only():
    z_s = torch.randn(2, 3, 5, requires_grad=True)
    z_t = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE], [IGNORE, 3, 4]])
    from repro.methods import Context, VanillaKD

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.logits})()

    terms = VanillaKD().loss(Fixed(z_s), {"input_ids": None, "attention_mask": None, "labels": labels},
                             Context(n_vocab=5, divergence="kl", teacher=Fixed(z_t)))
    terms["loss"].backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None
    # masked positions get no gradient
    assert z_s.grad[0, 2].abs().sum() == 0 and z_s.grad[1, 0].abs().sum() == 0
