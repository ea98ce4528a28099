import itertools
import math

import pytest
import torch
from plain import masked_sum

from repro.losses import DIVERGENCES, IGNORE, akl_weights, cross_entropy_sum, forward_kl, get_divergence

ALL = sorted(DIVERGENCES)


def _reference(name, z_s, z_t, tau, skew=0.1, threshold=0.5):
    """The PAPER.md definitions written naively in float64 probabilities (no log-space tricks)."""
    p_s = torch.softmax(z_s.double() / tau, -1)
    p_t = torch.softmax(z_t.double() / tau, -1)

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(-1)

    if name == "kl":
        return kl(p_t, p_s)
    if name == "rkl":
        return kl(p_s, p_t)
    if name == "js":
        m = (p_s + p_t) / 2
        return 0.5 * (kl(p_t, m) + kl(p_s, m))
    if name == "skl":
        return kl(p_t, skew * p_t + (1 - skew) * p_s)
    if name == "srkl":
        return kl(p_s, (1 - skew) * p_t + skew * p_s)
    if name == "tvd":
        return 0.5 * (p_t - p_s).abs().sum(-1)
    if name == "akl":
        out = torch.empty(p_s.shape[:-1], dtype=torch.float64)
        for idx in itertools.product(*(range(n) for n in p_s.shape[:-1])):
            pt, ps = p_t[idx], p_s[idx]
            cum, head, tail = 0.0, 0.0, 0.0
            for v in sorted(range(len(pt)), key=lambda v: pt[v].item()):
                cum += pt[v].item()
                gap = abs(pt[v].item() - ps[v].item())
                if cum <= threshold:
                    tail += gap
                else:
                    head += gap
            out[idx] = (head * kl(pt, ps) + tail * kl(ps, pt)) / (head + tail)
        return out
    raise KeyError(name)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_matches_the_definition(name, tau):
    torch.manual_seed(1)
    z_s, z_t = 3 * torch.randn(4, 5, 13), 3 * torch.randn(4, 5, 13)
    got = DIVERGENCES[name](z_s, z_t, temperature=tau)
    assert got.shape == (4, 5) and got.dtype == torch.float32
    assert torch.allclose(got.double(), _reference(name, z_s, z_t, tau), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_zero_at_equality_and_non_negative(name):
    torch.manual_seed(0)
    z = torch.randn(3, 5, 11)
    d = DIVERGENCES[name]
    assert torch.allclose(d(z, z.clone(), 2.0), torch.zeros(3, 5), atol=1e-6)
    assert (d(z, torch.randn(3, 5, 11), 2.0) >= -1e-6).all()
    assert (d(z, 10 * torch.randn(3, 5, 11), 2.0) >= -1e-6).all()


@pytest.mark.parametrize("name", ALL)
def test_finite_with_infinite_logits_and_fully_masked_rows(name):
    z_s = torch.randn(2, 4, 6, requires_grad=True)
    z_t = torch.randn(2, 4, 6)
    inf_s = torch.zeros(2, 4, 6, dtype=torch.bool)
    inf_s[..., 0] = True
    inf_s[0, 1, :] = True  # a student row that is entirely -inf
    s = z_s.masked_fill(inf_s, -math.inf)
    t = z_t.clone()
    t[..., 1] = -math.inf
    t[1, 2, :] = -math.inf  # a teacher row that is entirely -inf
    out = DIVERGENCES[name](s, t, 2.0)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(z_s.grad).all()
    # the fully masked rows contribute nothing
    assert out[0, 1] == 0 and out[1, 2] == 0


@pytest.mark.parametrize("name", ALL)
def test_infinite_entries_are_zeroed_not_propagated(name):
    """An entry that is -inf on one side adds nothing: the rest of the vocabulary decides the value."""
    z_s, z_t = torch.randn(7), torch.randn(7)
    with_inf = z_t.clone()
    with_inf[3] = -math.inf
    d = DIVERGENCES[name]
    p = lambda z: torch.softmax(z.double() / 2, -1)  # noqa: E731
    value = d(z_s, with_inf, 2.0).item()
    assert math.isfinite(value)
    if name in ("kl", "tvd"):
        keep = [i for i in range(7) if i != 3]
        ps, pt = p(z_s)[keep], p(with_inf)[keep]
        expected = (pt * (pt.log() - ps.log())).sum() if name == "kl" else 0.5 * (pt - ps).abs().sum()
        assert value == pytest.approx(expected.item(), abs=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_bf16_inputs_are_computed_in_float32(name):
    torch.manual_seed(2)
    z_s, z_t = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    full = DIVERGENCES[name](z_s.bfloat16().float(), z_t.bfloat16().float(), 2.0)
    half = DIVERGENCES[name](z_s.bfloat16(), z_t.bfloat16(), 2.0)
    assert half.dtype == torch.float32
    assert torch.equal(full, half)


def test_js_and_tvd_are_symmetric():
    z_s, z_t = torch.randn(3, 9), torch.randn(3, 9)
    for name in ("js", "tvd"):
        assert torch.allclose(DIVERGENCES[name](z_s, z_t, 2.0), DIVERGENCES[name](z_t, z_s, 2.0), atol=1e-6)
    assert not torch.allclose(DIVERGENCES["kl"](z_s, z_t), DIVERGENCES["kl"](z_t, z_s))
    assert torch.allclose(DIVERGENCES["kl"](z_s, z_t), DIVERGENCES["rkl"](z_t, z_s), atol=1e-6)


def test_skew_limits():
    z_s, z_t = torch.randn(4, 9), torch.randn(4, 9)
    skl, srkl = DIVERGENCES["skl"], DIVERGENCES["srkl"]
    # skew 0: the mixture is the other distribution, so the skewed divergences are plain KL / reverse KL
    assert torch.allclose(skl(z_s, z_t, 2.0, skew=0.0), forward_kl(z_s, z_t, 2.0), atol=1e-6)
    assert torch.allclose(srkl(z_s, z_t, 2.0, skew=0.0), DIVERGENCES["rkl"](z_s, z_t, 2.0), atol=1e-6)
    # skew 1: the mixture equals the first argument, so they vanish
    assert torch.allclose(skl(z_s, z_t, 2.0, skew=1.0), torch.zeros(4), atol=1e-6)
    assert torch.allclose(srkl(z_s, z_t, 2.0, skew=1.0), torch.zeros(4), atol=1e-6)
    # and the skewed value lies below the unskewed one (the mixture is closer to the target)
    assert (skl(z_s, z_t, 2.0) <= forward_kl(z_s, z_t, 2.0) + 1e-6).all()


def test_akl_weights_sum_to_one_and_are_detached():
    z_s = torch.randn(5, 11, requires_grad=True)
    z_t = torch.randn(5, 11)
    w_kl, w_rkl = akl_weights(z_s, z_t, 2.0)
    assert torch.allclose(w_kl + w_rkl, torch.ones(5))
    assert ((w_kl >= 0) & (w_kl <= 1)).all()
    assert not w_kl.requires_grad
    w_kl, w_rkl = akl_weights(z_s, z_s.detach(), 2.0)  # no gap at all
    assert torch.equal(w_kl, torch.full((5,), 0.5))


def test_hand_computed_three_token_vocabulary():
    # temperature 1; p_t = (0.5, 0.3, 0.2), p_s = (0.2, 0.3, 0.5)
    p_t = torch.tensor([0.5, 0.3, 0.2])
    p_s = torch.tensor([0.2, 0.3, 0.5])
    z_t, z_s = p_t.log(), p_s.log()
    kl = 0.5 * math.log(0.5 / 0.2) + 0.3 * 0 + 0.2 * math.log(0.2 / 0.5)
    assert DIVERGENCES["kl"](z_s, z_t).item() == pytest.approx(kl, abs=1e-6)
    assert DIVERGENCES["rkl"](z_s, z_t).item() == pytest.approx(kl, abs=1e-6)  # mirror image
    m = [0.35, 0.3, 0.35]
    js = 0.5 * (0.5 * math.log(0.5 / 0.35) + 0.2 * math.log(0.2 / 0.35)
                + 0.2 * math.log(0.2 / 0.35) + 0.5 * math.log(0.5 / 0.35))
    assert DIVERGENCES["js"](z_s, z_t).item() == pytest.approx(js, abs=1e-6)
    mix = [0.1 * a + 0.9 * b for a, b in zip([0.5, 0.3, 0.2], [0.2, 0.3, 0.5])]  # 0.23, 0.3, 0.47
    skl = sum(a * math.log(a / b) for a, b in zip([0.5, 0.3, 0.2], mix))
    assert DIVERGENCES["skl"](z_s, z_t).item() == pytest.approx(skl, abs=1e-6)
    assert DIVERGENCES["tvd"](z_s, z_t).item() == pytest.approx(0.3, abs=1e-6)
    # AKL: sorted p_t = 0.2 (cum 0.2, tail), 0.3 (cum 0.5, tail: <= 0.5), 0.5 (head)
    # gaps: 0.3, 0.0 in the tail; 0.3 in the head -> weights 0.5 / 0.5
    assert DIVERGENCES["akl"](z_s, z_t).item() == pytest.approx(0.5 * kl + 0.5 * kl, abs=1e-6)
    assert akl_weights(z_s, z_t)[0].item() == pytest.approx(0.5)
    assert m  # the JS mixture above, spelled out for the reader


def test_unknown_options_and_names_are_errors():
    z = torch.randn(2, 5)
    with pytest.raises(TypeError):
        DIVERGENCES["kl"](z, z, 2.0, skew=0.1)
    with pytest.raises(ValueError, match="unknown divergence 'kll'"):
        get_divergence("kll")
    with pytest.raises(ValueError, match="temperature must be positive"):
        DIVERGENCES["kl"](z, z, 0.0)


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
    from conftest import make_context
    from repro.methods import VanillaKD

    z_s = torch.randn(2, 3, 5, requires_grad=True)
    z_t = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE], [IGNORE, 3, 4]])

    class Fixed(torch.nn.Module):
        """A stand-in causal LM whose final hidden states are the given logits and whose head is the identity."""

        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.head = torch.nn.Linear(5, 5, bias=False)
            self.head.weight.data = torch.eye(5)
            self.head.requires_grad_(False)

        @property
        def base_model(self):
            return self

        def get_output_embeddings(self):
            return self.head

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.logits, "last_hidden_state": self.logits})()

    terms = VanillaKD().loss(Fixed(z_s), {"input_ids": None, "attention_mask": None, "labels": labels},
                             make_context(5, divergence="kl", teacher=Fixed(z_t)))
    terms["loss"].backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert z_t.grad is None
    assert z_s.grad[0, 2].abs().sum() == 0 and z_s.grad[1, 0].abs().sum() == 0


def _sorted_head_gap(p_t, gap, threshold):
    """The AKL head gap by its definition: a stable ascending sort, the tail where the cumulative sum is <= the
    threshold (float64), the head the rest."""
    ordered, order = p_t.sort(dim=-1, stable=True)
    tail = ordered.double().cumsum(-1) <= threshold
    return (gap.gather(-1, order) * ~tail).sum(-1)


@pytest.mark.parametrize("vocab", [7, 300, 5000])
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9])
def test_akl_head_without_sorting_equals_the_sorted_definition(vocab, threshold):
    """Every path of the partial selection (the first 64, 16 times as many, the sort of long heads) on rows from
    peaked to flat, with zeros (masked entries) and exact ties at the head's boundary."""
    from repro.losses import akl_head_gap

    torch.manual_seed(vocab)
    scales = torch.tensor([0.0, 0.1, 1.0, 3.0, 10.0, 30.0]).repeat_interleave(4)
    logits = torch.randn(len(scales), vocab) * scales[:, None]
    p_t = torch.softmax(logits, -1)
    p_t[::5, : vocab // 3] = 0.0  # masked (infinite) entries
    # exact ties: equal logits give equal probabilities, several of them around the boundary
    ties = torch.zeros(4, vocab)
    ties[:, :4] = torch.tensor([2.0, 2.0, 2.0, 2.0])
    ties[1, 4:8] = 1.0
    ties[2] = 0.0  # uniform
    p_t = torch.cat([p_t, torch.softmax(ties, -1), torch.full((1, vocab), 0.0)])  # and an all-masked row
    p_s = torch.softmax(torch.randn(p_t.shape), -1)
    gap = (p_t - p_s).abs()
    expected = _sorted_head_gap(p_t, gap, threshold)
    got = akl_head_gap(p_t, gap, threshold)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    # tied entries at the boundary: the head takes the tied entries of highest index, as the stable sort does; in a
    # large vocabulary (the top-k path): 0.3 and three entries of 0.1 at indices 10, 20, 30, the rest spread thin;
    # with threshold 0.55 the head is 0.3 and two of the three 0.1 (exclusive prefix 0.3, 0.4 < 0.45; 0.5 is not)
    row = torch.full((1, 5000), 0.4 / 4996)
    row[0, [5, 10, 20, 30]] = torch.tensor([0.3, 0.1, 0.1, 0.1])
    gaps = torch.zeros(1, 5000)
    gaps[0, [5, 10, 20, 30]] = torch.tensor([1.0, 2.0, 4.0, 8.0])
    assert akl_head_gap(row, gaps, 0.55).item() == 13.0
    assert _sorted_head_gap(row, gaps, 0.55).item() == 13.0
    uniform = torch.full((1, 4), 0.25)
    assert akl_head_gap(uniform, torch.tensor([[1.0, 2.0, 4.0, 8.0]]), 0.5).item() == 12.0
    assert akl_head_gap(uniform, torch.tensor([[1.0, 2.0, 4.0, 8.0]]), 0.3).item() == 14.0


def test_akl_equals_the_previous_full_sort_implementation():
    """The partial selection changes no AKL value: compared with weights from a full sort on every row."""
    torch.manual_seed(3)
    z_s, z_t = 2 * torch.randn(6, 9, 2000), torch.randn(6, 9, 2000) * torch.linspace(0.1, 8, 9)[:, None]
    p_s, p_t = torch.softmax(z_s / 2, -1), torch.softmax(z_t / 2, -1)
    gap = (p_t - p_s).abs()
    w_sorted = _sorted_head_gap(p_t, gap, 0.5).float() / gap.sum(-1)
    w_kl, w_rkl = akl_weights(z_s, z_t, 2.0)
    torch.testing.assert_close(w_kl, w_sorted, rtol=1e-5, atol=1e-6)
    expected = w_sorted * forward_kl(z_s, z_t, 2.0) + (1 - w_sorted) * DIVERGENCES["rkl"](z_s, z_t, 2.0)
    torch.testing.assert_close(DIVERGENCES["akl"](z_s, z_t, 2.0), expected, rtol=1e-5, atol=1e-6)


def test_akl_head_by_histogram_resolves_flat_rows_exactly():
    """The histogram path on its own: flat rows over 50,000 entries (where the head is thousands of entries long),
    an exactly uniform row (one bucket holds the whole row) and rows with zeros (masked entries, in the last bucket
    with the smallest values) equal the sorted definition."""
    from repro.losses import _head_by_histogram

    torch.manual_seed(0)
    # 0.01 and 0.05: nearly uniform rows (randomly initialised models)
    scales = torch.tensor([0.01, 0.05, 0.5, 0.3, 1.0, 2.0, 3.0, 0.0, 1.0, 0.05])
    p_t = torch.softmax(torch.randn(10, 50000) * scales[:, None], -1)
    p_t[8:, :30000] = 0.0
    gap = torch.rand(p_t.shape)
    for threshold in (0.5, 0.05, 0.99):
        limit = p_t.double().sum(-1) - threshold
        got = _head_by_histogram(p_t, gap, limit, buckets=4096)
        torch.testing.assert_close(got, _sorted_head_gap(p_t, gap, threshold), rtol=1e-6, atol=1e-6)
