"""Cross-vocabulary methods (ULD, DSKD-CMA) on tiny teacher/student pairs with different tokenizers."""
import dataclasses

import pytest
import torch

from conftest import make_pair, train_steps
from repro import names
from repro.data import IGNORE, collate, encode_dataset
from repro.methods import combine_std, get_method, uld_distance_sum
from repro.models import load_model
from repro.settings import TrainSettings
from repro.training import build_context
from repro.vocab import load_tokenizer

# (teacher arch, teacher tokenizer) -> (student arch, student tokenizer): the paper's two cross-vocabulary pairs,
# and a GPT-2 teacher, which the official CMA code cannot use.
PAIRS = {
    "qwen_to_gpt2": (("qwen2", "qwen"), ("gpt2", "gpt2")),
    "mistral_to_llama": (("mistral", "mistral"), ("llama", "llama")),
    "gpt2_to_llama": (("gpt2", "gpt2"), ("llama", "llama")),
}
CROSS_METHODS = [n for n, m in names.METHODS.items() if m.cross_vocab]  # every one of the registry
MAX_LENGTH = 256  # the tiny models' positions; the official CMA statistics pad every sequence to it


@pytest.fixture(scope="module")
def cross_pairs(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("cross")
    return {name: make_pair(root / name, trained_tokenizers, teacher, student, seeds=(3, 3))
            for name, (teacher, student) in PAIRS.items()}


def _setup(paths, splits, method_name, divergence="kl", n=6, **options):
    teacher_path, student_path = paths
    s_tok, t_tok = load_tokenizer(student_path), load_tokenizer(teacher_path)
    assert s_tok.get_vocab() != t_tok.get_vocab()
    teacher = load_model(teacher_path).eval()
    teacher.requires_grad_(False)
    student = load_model(student_path)
    encoded = encode_dataset(splits["train"][:n], s_tok, MAX_LENGTH, 128, teacher_tokenizer=t_tok)
    method = get_method(method_name)
    ctx = build_context(TrainSettings(lr=1e-3, epochs=1, max_length=MAX_LENGTH, **options), s_tok, divergence,
                        teacher, t_tok)
    ctx.modules = method.build(student, teacher)
    method.prepare(encoded, s_tok, ctx)
    method.begin_step(encoded, ctx)
    batch = collate(encoded, s_tok.pad_token_id, t_tok.pad_token_id)
    return student, teacher, batch, method, ctx


def test_batches_carry_both_tokenisations(cross_pairs, small_splits):
    _, _, batch, _, _ = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "uld")
    assert batch["input_ids"].shape[0] == batch["teacher_input_ids"].shape[0] == 6
    assert batch["input_ids"].shape != batch["teacher_input_ids"].shape or \
        not torch.equal(batch["input_ids"], batch["teacher_input_ids"])
    assert ((batch["teacher_labels"] != IGNORE).sum(1) > 0).all()


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("method_name", CROSS_METHODS)
def test_cross_vocab_methods_train(cross_pairs, small_splits, pair, method_name):
    torch.manual_seed(0)
    student, teacher, batch, method, ctx = _setup(cross_pairs[pair], small_splits, method_name)
    losses = train_steps(method, student, batch, ctx)
    assert losses[-1] < losses[0] - 0.05, losses


def test_cma_projector_shapes_and_diagnostics(cross_pairs, small_splits):
    student, teacher, batch, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "dskd_cma")
    assert ctx.modules["query"].weight.shape == (2 * 48, 2 * 32)
    assert ctx.modules["t2s"].weight.shape == (32, 48) and ctx.modules["s2t"].weight.shape == (48, 32)
    terms = method.terms(student, batch, ctx)
    n_tokens = (batch["labels"] != IGNORE).sum()
    assert 0 <= terms["t2s_acc"] <= n_tokens
    t_width = batch["teacher_input_ids"].shape[1]
    assert 0 <= terms["attention_entropy"] / n_tokens <= torch.log(torch.tensor(float(t_width)))


@pytest.mark.parametrize("pair", ["qwen_to_gpt2", "gpt2_to_llama"])
def test_cma_gradient_paths(cross_pairs, small_splits, pair):
    student, teacher, batch, method, ctx = _setup(cross_pairs[pair], small_splits, "dskd_cma")
    # train the projectors a little so that the attended teacher is right somewhere (t2s_kd is then non-zero)
    optimizer = torch.optim.Adam(ctx.modules.parameters(), lr=1e-2)
    for _ in range(40):
        method.terms(student, batch, ctx)["t2s_ce"].backward()
        optimizer.step()
        optimizer.zero_grad()
        student.zero_grad(set_to_none=True)
    assert method.terms(student, batch, ctx)["t2s_acc"] > 0
    teacher.requires_grad_(True)
    head = student.get_output_embeddings().weight
    body = [p for p in student.parameters() if p is not head]

    def has(params):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)

    expectations = {
        # term: (student body, query projector, t2s projector, s2t projector)
        "t2s_ce": (False, True, True, False),
        "t2s_kd": (True, False, False, False),
        "s2t_kd": (True, True, False, True),
    }
    for term, (want_body, want_query, want_t2s, want_s2t) in expectations.items():
        for module in (student, teacher, ctx.modules):
            module.zero_grad(set_to_none=True)
        method.terms(student, batch, ctx)[term].backward()
        assert has(body) == want_body, term
        assert has(ctx.modules["query"].parameters()) == want_query, term
        assert has(ctx.modules["t2s"].parameters()) == want_t2s, term
        assert has(ctx.modules["s2t"].parameters()) == want_s2t, term
        assert not has(teacher.parameters()), term
        if not student.config.tie_word_embeddings:
            # the student head is detached in z_t2s and only reads h_s in s2t: only t2s_kd reaches it
            assert (head.grad is not None and head.grad.abs().sum() > 0) == (term == "t2s_kd"), term


def test_cma_student_space_kd_only_where_the_teacher_is_right(cross_pairs, small_splits):
    """t2s_kd sums the divergence over exactly the response positions where argmax(z_t2s) == y."""
    student, teacher, batch, method, ctx = _setup(cross_pairs["mistral_to_llama"], small_splits, "dskd_cma")
    real = ctx.divergence_fn()
    seen = []

    def spy(z_s, z_t2s, temperature):
        seen.append((z_s.detach().clone(), z_t2s.clone()))
        return real(z_s, z_t2s, temperature)

    ctx.divergence_fn = lambda: spy
    terms = method.terms(student, batch, ctx)
    (z_s_rows, z_t2s_rows), = seen
    assert z_s_rows.shape[0] == terms["t2s_acc"].item()
    # the rows are response positions whose student-space teacher prediction is the gold token
    labels = batch["labels"][batch["labels"] != IGNORE]
    assert set(z_t2s_rows.argmax(-1).tolist()) <= set(labels.tolist())
    assert terms["t2s_kd"].item() == pytest.approx(real(z_s_rows, z_t2s_rows, ctx.kd_temperature).sum().item())


def test_uld_by_hand():
    # one sequence; student vocabulary 3, teacher vocabulary 2; one aligned response position each
    z_s = torch.log(torch.tensor([[[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]]))
    labels = torch.tensor([[IGNORE, 2]])
    z_t = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.3, 0.7]]]))
    t_labels = torch.tensor([[IGNORE, 0, 1]])
    # aligned: student position 1 with teacher position 1 (the first response token of each); the teacher's second
    # response token has no partner. Sorted: s = (0.8, 0.1, 0.1), t = (0.9, 0.1, 0) -> |.| = 0.1 + 0 + 0.1
    assert uld_distance_sum(z_s, labels, z_t, t_labels).item() == pytest.approx(0.2, abs=1e-6)
    # no temperature: scaling logits changes the value
    assert uld_distance_sum(2 * z_s, labels, z_t, t_labels).item() != pytest.approx(0.2, abs=1e-3)


def test_uld_padded_teacher_rows_do_not_matter_when_cut(cross_pairs, small_splits):
    """The Qwen-like teacher has padded embedding rows; with ``teacher_padded_rows: cut`` ULD reads only the
    tokenizer's ids."""
    student, teacher, batch, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "uld",
                                                  teacher_padded_rows="cut")
    rows = teacher.get_output_embeddings().weight.shape[0]
    assert rows > ctx.teacher_n_vocab
    with torch.no_grad():
        base = method.loss(student, batch, ctx)["loss"]
        teacher.get_output_embeddings().weight[ctx.teacher_n_vocab:] = 100.0
        assert torch.allclose(method.loss(student, batch, ctx)["loss"], base)


def _pad_to(batch: dict, width: int, pad_ids: tuple[int, int]) -> dict:
    """``batch`` with every sequence right-padded to ``width``, as the official collate pads to max_length."""
    out = {}
    for name, t in batch.items():
        if t.dim() != 2:  # example_index
            out[name] = t
            continue
        value = {"input_ids": pad_ids[0], "teacher_input_ids": pad_ids[1], "labels": IGNORE,
                 "teacher_labels": IGNORE}.get(name, 0)
        out[name] = torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
    return out


def _official_cma_terms(student, teacher, batch, ctx, normalisation, pad_ids):
    """DSKD-CMA computed the plain way on a batch padded to max_length, with every standard deviation taken over
    the whole padded tensor (``official``: prompt and padding positions included, the teacher's hidden states at
    pad positions from its own forward) or over its response positions (``response``): full [B,L,V] logits, masks,
    no per-example sums (PAPER.md section 2)."""
    from plain import forward_with_hidden, masked_sum

    from repro.losses import cross_entropy_sum, forward_kl, get_divergence
    from repro.methods import _teacher_batch, head_logits

    batch = _pad_to(batch, ctx.max_length, pad_ids)
    labels, t_labels = batch["labels"], batch["teacher_labels"]
    s_mask, t_mask = labels != IGNORE, t_labels != IGNORE
    t_rows = ctx.teacher_rows()
    z_s, h_s = forward_with_hidden(student, batch, ctx.n_vocab)
    z_t, h_t = forward_with_hidden(teacher, _teacher_batch(batch), t_rows)
    s_embed, t_embed = student.get_input_embeddings(), teacher.get_input_embeddings()
    s_index = torch.cat([s_embed(batch["input_ids"].masked_fill(~s_mask, 0)),
                         s_embed(labels.masked_fill(~s_mask, 0))], -1).detach()  # the queries read no gradient
    t_target = t_embed(t_labels.masked_fill(~t_mask, 0))
    t_index = torch.cat([t_embed(batch["teacher_input_ids"].masked_fill(~t_mask, 0)), t_target], -1)
    if normalisation == "official":
        stds = [t_index.std(), h_t.std(), t_target.std()]
    else:
        stds = [t_index[t_mask].std(), h_t[t_mask].std(), t_target[t_mask].std()]
    keys = t_index / stds[0]
    proj = ctx.modules
    scores = proj["query"](s_index) @ keys.transpose(-1, -2) / (2 * h_t.shape[-1]) ** 0.5
    scores = scores + (~(s_mask.unsqueeze(-1) & t_mask.unsqueeze(1))).float() * -1e5
    t_values = proj["t2s"](h_t / stds[1] + t_target / stds[2])
    z_t2s = head_logits(torch.softmax(scores, -1) @ t_values, student, ctx.n_vocab, detach_head=True)
    z_s2t = head_logits(torch.softmax(scores.transpose(-1, -2), -1) @ proj["s2t"](h_s), teacher, t_rows,
                        detach_head=True)
    kd_labels = labels.masked_fill(~((z_t2s.argmax(-1) == labels) & s_mask), IGNORE)
    terms = {"ce": cross_entropy_sum(z_s, labels), "t2s_ce": cross_entropy_sum(z_t2s, labels),
             "t2s_kd": masked_sum(get_divergence(ctx.divergence)(z_s, z_t2s.detach(), ctx.kd_temperature), kd_labels),
             "s2t_kd": masked_sum(forward_kl(z_s2t, z_t, ctx.kd_temperature), t_labels),
             "t2s_acc": (kd_labels != IGNORE).sum().float()}
    return terms, torch.stack(stds)


@pytest.mark.parametrize("normalisation", ["official", "response"])
@pytest.mark.parametrize("pair", ["qwen_to_gpt2", "gpt2_to_llama"])
def test_cma_equals_the_plain_computation_on_batches_padded_to_max_length(cross_pairs, small_splits, pair,
                                                                          normalisation):
    """The project pads a micro batch to its longest sequence and runs heads on response positions only, with the
    standard deviations pooled from per-example sums; every term (and each standard deviation) equals the plain
    computation on the batch padded to max_length (the official tensors), with the Qwen-like teacher's padded head
    rows kept (the official default)."""
    student, teacher, batch, method, ctx = _setup(cross_pairs[pair], small_splits, "dskd_cma",
                                                  cma_normalisation=normalisation)
    assert batch["teacher_input_ids"].shape[1] < MAX_LENGTH  # so the padding really is added by the reference
    terms = method.terms(student, batch, ctx)
    pad_ids = (load_tokenizer(cross_pairs[pair][1]).pad_token_id, ctx.teacher_tokenizer.pad_token_id)
    with torch.no_grad():
        expected, stds = _official_cma_terms(student, teacher, batch, ctx, normalisation, pad_ids)
    torch.testing.assert_close(ctx.cma_scales.float(), stds, rtol=1e-5, atol=0)
    for name, value in expected.items():
        torch.testing.assert_close(terms[name].detach(), value, rtol=1e-4, atol=1e-4)
    # the two normalisations really differ (prompt and padding positions change every standard deviation)
    other = _setup(cross_pairs[pair], small_splits, "dskd_cma",
                   cma_normalisation={"official": "response", "response": "official"}[normalisation])[4]
    assert ((other.cma_scales - ctx.cma_scales).abs() / ctx.cma_scales > 0.01).any()


def _gradients(loss: torch.Tensor, *modules) -> list[torch.Tensor]:
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize("divergence", ["kl", "akl"])
@pytest.mark.parametrize("pair", ["qwen_to_gpt2", "gpt2_to_llama"])
def test_cma_loss_gradients_equal_the_plain_computation(cross_pairs, small_splits, pair, divergence):
    """The lean CMA loss (frozen heads, the teacher's logits in blocks) has the gradient of the plain autograd
    computation on the batch padded to max_length, for the student and every projector; its terms are trained a
    little first, so that the attended teacher is right somewhere (t2s_kd is then non-zero)."""
    student, teacher, batch, method, ctx = _setup(cross_pairs[pair], small_splits, "dskd_cma", divergence=divergence)
    optimizer = torch.optim.Adam(ctx.modules.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        method.terms(student, batch, ctx)["t2s_ce"].backward()
        optimizer.step()
    pad_ids = (load_tokenizer(cross_pairs[pair][1]).pad_token_id, ctx.teacher_tokenizer.pad_token_id)
    terms = method.loss(student, batch, ctx)
    assert terms["t2s_acc"] > 0
    lean = _gradients(terms["loss"], student, ctx.modules)
    plain, _ = _official_cma_terms(student, teacher, batch, ctx, "official", pad_ids)
    kd = plain["t2s_ce"] + plain["t2s_kd"] + plain["s2t_kd"]
    reference = _gradients((1 - ctx.kd_rate) * plain["ce"] + ctx.kd_rate * kd, student, ctx.modules)
    torch.testing.assert_close(terms["loss"].detach(), ((1 - ctx.kd_rate) * plain["ce"] + ctx.kd_rate * kd).detach(),
                               rtol=1e-5, atol=1e-5)
    for got, want in zip(lean, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("target", ["first", "sum"])
@pytest.mark.parametrize("pair", ["mistral_to_llama", "qwen_to_gpt2"])
def test_mined_loss_gradients_equal_the_plain_computation(cross_pairs, small_splits, pair, target):
    """MinED's loss (with ``first``: CE and KD in one lean pass over the student's response rows, the one-hot rows
    as logits) has the value and gradient of the plain computation: full [B,L,V] logits, ``mined_kd_sum`` and the
    plain cross-entropy."""
    from repro.losses import cross_entropy_sum
    from repro.methods import _teacher_batch, mined_kd_sum

    student, teacher, batch, method, ctx = _setup(cross_pairs[pair], small_splits, "mined", mined_target=target)
    terms = method.loss(student, batch, ctx)
    lean = _gradients(terms["loss"], student)
    z_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :ctx.n_vocab]
    tb = _teacher_batch(batch)
    with torch.no_grad():
        z_t = teacher(input_ids=tb["input_ids"], attention_mask=tb["attention_mask"]).logits
    kd, aligned = mined_kd_sum(z_s, batch["labels"], z_t, batch["teacher_positions"], ctx.vocab_map,
                               ctx.kd_temperature, target, ctx.first_ids)
    ce = cross_entropy_sum(z_s, batch["labels"])
    assert 0 < aligned < (batch["labels"] != IGNORE).sum()  # both kinds of rows, aligned and one-hot
    loss = (1 - ctx.kd_rate) * ce + ctx.kd_rate * kd
    for name, value in (("loss", loss), ("ce", ce), ("kd", kd), ("aligned", aligned)):
        torch.testing.assert_close(terms[name].detach(), value.detach(), rtol=1e-5, atol=1e-5)
    for got, want in zip(lean, _gradients(loss, student)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("normalisation", ["official", "response"])
def test_cma_step_does_not_depend_on_micro_batches(cross_pairs, small_splits, normalisation):
    """One global batch of 4 examples of different lengths as one micro batch or as 2 + 2: the same loss and the
    same gradients (the standard deviations come from the whole global batch); with statistics of each micro batch
    alone, as the official code takes them, the value would move."""
    student, teacher, _, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "dskd_cma", n=4,
                                              cma_normalisation=normalisation)
    s_tok = load_tokenizer(cross_pairs["qwen_to_gpt2"][1])
    encoded = encode_dataset(small_splits["train"][:4], s_tok, MAX_LENGTH, 128, teacher_tokenizer=ctx.teacher_tokenizer)
    method.prepare(encoded, s_tok, ctx)
    assert len({len(e.teacher.input_ids) for e in encoded}) > 1
    params = list(student.parameters()) + list(ctx.modules.parameters())

    def step(groups):
        for p in params:
            p.grad = None
        total = 0.0
        for group in groups:
            batch = collate(group, s_tok.pad_token_id, ctx.teacher_tokenizer.pad_token_id)
            loss = method.loss(student, batch, ctx)["loss"]
            loss.backward()
            total += loss.item()
        return total, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    method.begin_step(encoded, ctx)
    whole, whole_grads = step([encoded])
    split, split_grads = step([encoded[:2], encoded[2:]])
    assert split == pytest.approx(whole, rel=1e-5)
    for a, b in zip(whole_grads, split_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # statistics of each micro batch alone (the official code's grouping) differ, and move the gradients by far
    # more than the split does
    local_grads = [torch.zeros_like(p) for p in params]
    for group in (encoded[:2], encoded[2:]):
        method.begin_step(group, ctx)
        assert ((ctx.cma_scales - combine_std(torch.stack([e.cma_sums for e in encoded]))).abs()
                / ctx.cma_scales > 1e-3).any()
        local_grads = [g + h for g, h in zip(local_grads, step([group])[1])]
    query = [i for i, p in enumerate(params) if any(p is q for q in ctx.modules["query"].parameters())]

    def gap(grads):
        return max(((grads[i] - whole_grads[i]).norm() / whole_grads[i].norm()).item() for i in query)

    assert gap(local_grads) > 100 * gap(split_grads) + 1e-4


def test_cma_needs_its_statistics(cross_pairs, small_splits):
    student, teacher, batch, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "dskd_cma")
    ctx.cma_scales = None
    with pytest.raises(ValueError, match="begin_step"):
        method.terms(student, batch, ctx)
    with pytest.raises(ValueError, match="max_length=512"):
        _setup(cross_pairs["qwen_to_gpt2"], small_splits, "dskd_cma")[3].prepare(
            [], None, dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings, max_length=512)))


@pytest.mark.parametrize("method_name", ["uld", "dskd_cma"])
def test_padded_teacher_rows_kept_or_cut(cross_pairs, small_splits, method_name):
    """The Qwen-like teacher has padded head rows. ``keep`` (the official code) puts them in ULD's sort and CMA's
    teacher-space term, so their weights change the loss; ``cut`` reads the tokenizer's ids only."""
    for rows, changes in (("keep", True), ("cut", False)):
        student, teacher, batch, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, method_name,
                                                      teacher_padded_rows=rows)
        head = teacher.get_output_embeddings().weight
        assert head.shape[0] > ctx.teacher_n_vocab
        assert ctx.teacher_rows() == (head.shape[0] if rows == "keep" else ctx.teacher_n_vocab)
        with torch.no_grad():
            base = method.loss(student, batch, ctx)["loss"]
            head[ctx.teacher_n_vocab:] = 3.0 * torch.randn_like(head[ctx.teacher_n_vocab:])
            moved = method.loss(student, batch, ctx)["loss"]
        assert (not torch.allclose(moved, base, rtol=1e-4)) == changes, (rows, base, moved)


def test_uld_keeps_padded_teacher_rows_in_its_sort(cross_pairs, small_splits):
    student, teacher, batch, method, ctx = _setup(cross_pairs["qwen_to_gpt2"], small_splits, "uld")
    from repro.methods import _teacher_batch

    with torch.no_grad():
        z_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        z_t = teacher(**{k: v for k, v in _teacher_batch(batch).items() if k != "labels"}).logits  # every row
        expected = uld_distance_sum(z_s[..., :ctx.n_vocab], batch["labels"], z_t, batch["teacher_labels"])
        assert z_t.shape[-1] > ctx.teacher_n_vocab
        torch.testing.assert_close(method.loss(student, batch, ctx)["kd"], expected)


def test_mined_loss_equals_the_term_on_full_teacher_logits(cross_pairs, small_splits):
    """MinED runs the teacher's head on the aligned rows only; its KD term equals ``mined_kd_sum`` on the full
    [B,T,V] teacher logits."""
    from repro.methods import _teacher_batch, mined_kd_sum

    student, teacher, batch, method, ctx = _setup(cross_pairs["mistral_to_llama"], small_splits, "mined")
    with torch.no_grad():
        z_s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :ctx.n_vocab]
        tb = _teacher_batch(batch)
        z_t = teacher(input_ids=tb["input_ids"], attention_mask=tb["attention_mask"]).logits
        expected, aligned = mined_kd_sum(z_s, batch["labels"], z_t, batch["teacher_positions"], ctx.vocab_map,
                                         ctx.kd_temperature, ctx.mined_target, ctx.first_ids)
        terms = method.loss(student, batch, ctx)
    assert aligned > 0
    torch.testing.assert_close(terms["kd"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["aligned"], aligned)
