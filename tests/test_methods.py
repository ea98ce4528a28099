"""Every method on tiny models of every architecture family: shapes, falling losses, gradient paths, padded rows."""
from dataclasses import replace

import pytest
import torch
from plain import forward_with_hidden

from conftest import make_context, make_pair, train_steps
from repro import names
from repro.data import IGNORE, collate, encode_dataset
from repro.methods import get_method, hidden_size
from repro.models import ARCHS, load_model
from repro.vocab import load_tokenizer

TOKENIZER_OF = {"gpt2": "gpt2", "llama": "llama", "mistral": "mistral", "qwen2": "qwen"}
# Every method of the registry that trains on one tokenisation and reads the teacher's states, if any (SeqKD trains
# as SFT on the teacher's text; the cross-vocabulary methods are tested in test_cross_vocab.py).
SAME_VOCAB_METHODS = [n for n, m in names.METHODS.items() if not m.cross_vocab and not m.black_box]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, trained_tokenizers):
    """A teacher (width 48) and a student (width 32) of each family, sharing the family's tokenizer."""
    root = tmp_path_factory.mktemp("pairs")
    family = {arch: (arch, TOKENIZER_OF[arch]) for arch in ARCHS}
    return {arch: make_pair(root / arch, trained_tokenizers, family[arch], family[arch], seeds=(1, 2))
            for arch in ARCHS}


def _setup(pair, splits, method_name, divergence="kl", **ctx_options):
    teacher_path, student_path = pair
    tok = load_tokenizer(student_path)
    teacher = load_model(teacher_path).eval()
    teacher.requires_grad_(False)
    student = load_model(student_path)
    batch = collate(encode_dataset(splits["train"][:6], tok, 256, 128), tok.pad_token_id)
    method = get_method(method_name)
    ctx = make_context(len(tok), divergence=divergence, teacher=teacher, **ctx_options)
    ctx.modules = method.build(student, teacher)
    return student, teacher, batch, method, ctx


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method_name", SAME_VOCAB_METHODS)
def test_every_method_trains_every_family(pairs, small_splits, arch, method_name):
    torch.manual_seed(0)
    student, _, batch, method, ctx = _setup(pairs[arch], small_splits, method_name)
    losses = train_steps(method, student, batch, ctx)
    assert losses[-1] < losses[0] - 0.1, losses


def test_projector_shapes(pairs, small_splits):
    student, teacher, _, method, ctx = _setup(pairs["llama"], small_splits, "dskd")
    assert (hidden_size(student), hidden_size(teacher)) == (32, 48)
    assert ctx.modules["t2s"].weight.shape == (32, 48) and ctx.modules["t2s"].bias is not None
    assert ctx.modules["s2t"].weight.shape == (48, 32)
    assert set(get_method("dskd_student_space").build(student, teacher)) == {"t2s"}


def test_hidden_states_are_what_the_head_reads(pairs, small_splits):
    for arch in ARCHS:
        _, teacher, batch, _, _ = _setup(pairs[arch], small_splits, "sft")
        n = teacher.get_output_embeddings().weight.shape[0]
        logits, hidden = forward_with_hidden(teacher, batch, n)
        assert torch.allclose(teacher.get_output_embeddings()(hidden), logits, atol=1e-5), arch


def _grads(module):
    return {name: p.grad for name, p in module.named_parameters()}


def _has_grad(grad):
    return grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_dskd_gradient_paths(pairs, small_splits, arch):
    """Which parameters each DSKD term trains (PAPER.md section 2)."""
    student, teacher, batch, method, ctx = _setup(pairs[arch], small_splits, "dskd")
    teacher.requires_grad_(True)  # so that a leak into the teacher would show up as a gradient
    head = student.get_output_embeddings().weight
    body = [p for n, p in student.named_parameters() if p is not head]
    expectations = {
        # term: (student body, student head, t2s projector, s2t projector)
        "t2s_ce": (False, False, True, False),
        "t2s_kd": (True, True, False, False),
        "s2t_kd": (True, False, False, True),
        "ce": (True, True, False, False),
    }
    for term, (want_body, want_head, want_t2s, want_s2t) in expectations.items():
        for module in (student, teacher, ctx.modules):
            module.zero_grad(set_to_none=True)
        method.terms(student, batch, ctx)[term].backward()
        assert any(_has_grad(p.grad) for p in body) == want_body, term
        if student.config.tie_word_embeddings:
            # a tied head is also the input embedding, which the body's gradient reaches
            assert _has_grad(head.grad) == (want_head or want_body), term
        else:
            assert _has_grad(head.grad) == want_head, term
        assert any(_has_grad(g) for g in _grads(ctx.modules["t2s"]).values()) == want_t2s, term
        assert any(_has_grad(g) for g in _grads(ctx.modules["s2t"]).values()) == want_s2t, term
        assert not any(_has_grad(g) for g in _grads(teacher).values()), term


def test_dskd_head_detached_in_student_space(pairs, small_splits):
    """With an untied student head, the projector CE gives the student head no gradient at all."""
    student, _, batch, method, ctx = _setup(pairs["mistral"], small_splits, "dskd")
    assert not student.config.tie_word_embeddings
    method.terms(student, batch, ctx)["t2s_ce"].backward()
    assert student.get_output_embeddings().weight.grad is None
    assert all(p.grad is None for p in student.parameters())


def test_dskd_teacher_space_divergence_option(pairs, small_splits):
    student, _, batch, method, ctx = _setup(pairs["gpt2"], small_splits, "dskd", divergence="rkl")
    official = method.terms(student, batch, ctx)["s2t_kd"]
    row_ctx = replace(ctx, settings=replace(ctx.settings, dskd_s2t_divergence="row"))
    row = method.terms(student, batch, row_ctx)["s2t_kd"]
    assert not torch.allclose(official, row)
    ctx_kl = make_context(ctx.n_vocab, "kl", ctx.teacher, ctx.modules, dskd_s2t_divergence="row")
    ctx_kl_official = make_context(ctx.n_vocab, "kl", ctx.teacher, ctx.modules)
    assert torch.allclose(method.terms(student, batch, ctx_kl)["s2t_kd"],
                          method.terms(student, batch, ctx_kl_official)["s2t_kd"])
    with pytest.raises(ValueError, match="dskd_s2t_divergence"):
        make_context(5, dskd_s2t_divergence="js")


def test_dskd_total_and_diagnostics(pairs, small_splits):
    student, _, batch, method, ctx = _setup(pairs["qwen2"], small_splits, "dskd", divergence="akl")
    terms = method.terms(student, batch, ctx)
    out = method.loss(student, batch, ctx)
    kd = terms["t2s_kd"] + terms["t2s_ce"] + terms["s2t_kd"]
    assert torch.allclose(out["loss"], 0.5 * terms["ce"] + 0.5 * kd)
    n_tokens = (batch["labels"] != IGNORE).sum()
    assert 0 <= out["t2s_acc"] <= n_tokens
    ablation = get_method("dskd_student_space").loss(student, batch, ctx)
    assert "s2t_kd" not in ablation


def _with_padded_rows(model, extra):
    """A copy of ``model`` whose embedding/head matrices have ``extra`` more (random) rows."""
    import copy

    padded = copy.deepcopy(model)
    n = padded.get_input_embeddings().weight.shape[0]
    padded.resize_token_embeddings(n + extra, mean_resizing=False)
    with torch.no_grad():
        padded.get_output_embeddings().weight[n:] = 5 * torch.randn(extra, hidden_size(padded))
        if not padded.config.tie_word_embeddings:
            padded.get_input_embeddings().weight[n:] = torch.randn(extra, hidden_size(padded))
    return padded


@pytest.mark.parametrize("method_name", ["sft", "kd", "dskd"])
def test_padded_vocabulary_rows_do_not_change_the_loss(pairs, small_splits, method_name):
    student, teacher, batch, method, ctx = _setup(pairs["llama"], small_splits, method_name)
    torch.manual_seed(0)
    ctx.modules = method.build(student, teacher)
    base = method.loss(student, batch, ctx)["loss"]
    ctx.teacher = _with_padded_rows(teacher, 40)
    padded = method.loss(_with_padded_rows(student, 24), batch, ctx)["loss"]
    assert torch.allclose(base, padded, atol=1e-5), (base, padded)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("lora", [False, True])
def test_response_outputs_equal_the_full_forward_at_response_positions(pairs, small_splits, arch, lora):
    """The head runs on response positions only; logits and hidden states equal the full model's there."""
    from repro.methods import response_outputs
    from repro.models import add_lora

    tok = load_tokenizer(pairs[arch][1])
    model = load_model(pairs[arch][1]).eval()
    if lora:
        targets = ["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"]
        model = add_lora(model, {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": targets})
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    batch = collate(encode_dataset(small_splits["train"][:5], tok, 256, 128), tok.pad_token_id)
    z_full, h_full = forward_with_hidden(model, batch, len(tok))
    y, z, h = response_outputs(model, batch, len(tok))
    mask = batch["labels"] != IGNORE
    assert torch.equal(y, batch["labels"][mask])
    torch.testing.assert_close(z, z_full[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_full[mask], atol=1e-6, rtol=1e-6)
