import math
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from repro.generation import DecodeSettings, evaluate_set, generate
from repro.io import read_jsonl
from repro.methods import Context, get_method
from repro.models import init_model, load_model
from repro.settings import TrainSettings
from repro.training import cosine_lr, train
from repro.vocab import load_tokenizer


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1e-3, 1e-7) == pytest.approx(1e-3)
    assert cosine_lr(50, 100, 1e-3, 1e-7) == pytest.approx((1e-3 + 1e-7) / 2)
    assert cosine_lr(100, 100, 1e-3, 1e-7) == pytest.approx(1e-7)
    values = [cosine_lr(s, 100, 1e-3, 1e-7) for s in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"\(5 x 1\) must divide training.batch_size \(32\)"):
        TrainSettings(lr=1e-3, epochs=1, batch_size=32, micro_batch_size=5)
    with pytest.raises(TypeError):
        TrainSettings(lr=1e-3, epochs=1, learning_rate=3)
    with pytest.raises(ValueError, match="checkpoint_dtype must be 'auto', 'float32' or 'bfloat16', got 'fp16'"):
        TrainSettings(lr=1e-3, epochs=1, checkpoint_dtype="fp16")
    auto, half = TrainSettings(lr=1e-3, epochs=1), TrainSettings(lr=1e-3, epochs=1, checkpoint_dtype="bfloat16")
    assert (auto.saved_dtype(on_gpu=False), auto.saved_dtype(on_gpu=True)) == ("float32", "bfloat16")
    assert (half.saved_dtype(on_gpu=False), half.saved_dtype(on_gpu=True)) == ("bfloat16", "bfloat16")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, trained_tokenizers):
    path = tmp_path_factory.mktemp("tiny") / "gpt2"
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    init_model({"arch": "gpt2", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 256, "dropout": 0.0}, tok,
               path, seed=0)
    return path


def test_train_keeps_best_dev_checkpoint(tiny, small_splits, tmp_path):
    tok = load_tokenizer(tiny)
    model = load_model(tiny)
    settings = TrainSettings(lr=5e-3, epochs=2, batch_size=16, micro_batch_size=8, max_length=256,
                             max_prompt_length=128)
    decode = DecodeSettings(max_new_tokens=8, no_repeat_ngram_size=0, batch_size=16)
    summary = train(model, tok, small_splits["train"][:64], small_splits["dev"][:6], get_method("sft"),
                    Context(n_vocab=len(tok), settings=settings), decode, tmp_path)
    assert summary["steps"] == 2 * math.ceil(64 / 16)
    assert summary["batching"] == {"global_batch": 16, "micro_batch": 8, "gradient_accumulation": 2, "processes": 1,
                                   "mixed_precision": "no", "device": "cpu"}
    assert len(summary["history"]) == 2
    best = max(summary["history"], key=lambda h: h["dev_rougeL"])
    assert summary["best_epoch"] == best["epoch"]
    log = read_jsonl(tmp_path / "train_log.jsonl")
    steps = [r for r in log if "step" in r]
    assert len(steps) == summary["steps"] and steps[-1]["loss"] < steps[0]["loss"]
    assert steps[0]["lr"] == pytest.approx(5e-3)
    saved = load_model(tmp_path / "model")
    assert saved.config.n_layer == 1
    assert {t.dtype for t in load_file(tmp_path / "model" / "model.safetensors").values()} == {torch.float32}


def test_the_best_checkpoint_is_saved_in_the_checkpoint_dtype(tiny, small_splits, tmp_path):
    """``checkpoint_dtype: bfloat16`` saves a full fine-tune's best checkpoint in bf16 (half the disk) while its
    fp32 master weights train on: the same steps as the fp32 save, the saved weights their bf16 cast."""
    tok = load_tokenizer(tiny)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        settings = TrainSettings(lr=5e-3, epochs=1, batch_size=16, micro_batch_size=16, max_length=256,
                                 max_prompt_length=128, checkpoint_dtype=dtype)
        decode = DecodeSettings(max_new_tokens=4, no_repeat_ngram_size=0, batch_size=16)
        train(load_model(tiny), tok, small_splits["train"][:32], small_splits["dev"][:4], get_method("sft"),
              Context(n_vocab=len(tok), settings=settings), decode, tmp_path / dtype)
        runs[dtype] = load_file(tmp_path / dtype / "model" / "model.safetensors")
    assert runs["float32"].keys() == runs["bfloat16"].keys()
    for name, tensor in runs["float32"].items():
        assert torch.equal(runs["bfloat16"][name], tensor.to(torch.bfloat16)), name


def test_dev_check_seeds_are_recorded_but_do_not_choose(tiny, small_splits, tmp_path):
    """Check seeds score the dev set after every epoch; the checkpoint and the weights are those without them."""
    tok = load_tokenizer(tiny)
    decode = DecodeSettings(max_new_tokens=6, no_repeat_ngram_size=0, batch_size=16)
    summaries, weights = [], []
    for check in ([], [20, 30]):
        model = load_model(tiny)
        settings = TrainSettings(lr=5e-3, epochs=3, batch_size=16, micro_batch_size=16, max_length=256,
                                 max_prompt_length=128, dev_check_seeds=check)
        summaries.append(train(model, tok, small_splits["train"][:48], small_splits["dev"][:6], get_method("sft"),
                               Context(n_vocab=len(tok), settings=settings), decode, tmp_path / str(len(check))))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    plain, checked = summaries
    assert torch.equal(weights[0], weights[1]) and plain["best_epoch"] == checked["best_epoch"]
    assert plain["best_epoch_by_check_seed"] == {} and "dev_check_rougeL" not in plain["history"][0]
    assert all(set(h["dev_check_rougeL"]) == {"20", "30"} for h in checked["history"])
    for seed, epoch in checked["best_epoch_by_check_seed"].items():
        scores = [h["dev_check_rougeL"][seed] for h in checked["history"]]
        assert epoch == 1 + scores.index(max(scores))


def test_gradient_accumulation_matches_one_big_batch(tiny, small_splits, tmp_path):
    """Normalising by the global batch's tokens makes micro-batching an implementation detail."""
    tok = load_tokenizer(tiny)
    decode = DecodeSettings(max_new_tokens=2, no_repeat_ngram_size=0)
    weights = []
    for micro in (8, 2):
        model = load_model(tiny)
        settings = TrainSettings(lr=1e-3, epochs=1, batch_size=8, micro_batch_size=micro, max_length=256,
                                 max_prompt_length=128)
        train(model, tok, small_splits["train"][:8], small_splits["dev"][:2], get_method("sft"),
              Context(n_vocab=len(tok), settings=settings), decode, tmp_path / str(micro))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5)


def test_generation_is_seeded_and_scored(tiny, small_splits, tmp_path):
    tok = load_tokenizer(tiny)
    model = load_model(tiny)
    prompts = [r["prompt"] for r in small_splits["dev"][:4]]
    settings = DecodeSettings(max_new_tokens=6, batch_size=3)
    a = generate(model, tok, prompts, 10, settings)
    assert a == generate(model, tok, prompts, 10, settings)
    assert a != generate(model, tok, prompts, 20, settings)
    result = evaluate_set(model, tok, small_splits["dev"][:4], [10, 20], settings, out_dir=tmp_path, name="dev")
    assert set(result["per_seed"]) == {10, 20} and result["n"] == 4
    rows = read_jsonl(tmp_path / "dev_seed10.jsonl")
    assert [r["prediction"] for r in rows] == a
    assert all(r["seed"] == 10 and r["prompt"].endswith("### Response:\n") for r in rows)
    assert result["per_seed"][10] == pytest.approx(sum(r["rougeL"] for r in rows) / 4)


def test_a_run_that_diverges_but_stays_finite_is_warned_about(tiny, small_splits, tmp_path):
    """A learning rate of 30: the loss stays finite but ends far above where it started, and nothing the model
    samples overlaps a reference; the summary says both (and an ordinary run says nothing)."""
    from repro.training import training_warnings

    tok = load_tokenizer(tiny)
    settings = TrainSettings(lr=30.0, epochs=2, batch_size=8, micro_batch_size=8, max_length=256,
                             max_prompt_length=128)
    summary = train(load_model(tiny), tok, small_splits["train"][:32], small_splits["dev"][:4], get_method("sft"),
                    Context(n_vocab=len(tok), settings=settings), DecodeSettings(max_new_tokens=4, batch_size=4),
                    tmp_path)
    assert any("the training loss rose from" in w and "diverged" in w for w in summary["warnings"])
    log = [{"step": i, "epoch": 1 + (i > 10), "loss": 5.0 - 0.2 * i} for i in range(1, 21)]
    history = [{"epoch": 1, "dev_rougeL": 3.0}, {"epoch": 2, "dev_rougeL": 9.0}]
    assert training_warnings(log, history) == []
    zero = [{**h, "dev_rougeL": 0.0} for h in history]
    assert training_warnings(log, zero) == ["dev Rouge-L was 0 after each of the 2 epochs: the model's samples "
                                            "share nothing with the references"]
    assert [h["train_loss"] for h in summary["history"]] == pytest.approx(
        [sum(r["loss"] for r in read_jsonl(tmp_path / "train_log.jsonl") if r.get("epoch") == e and "step" in r) / 4
         for e in (1, 2)])  # an epoch's train_loss is the mean over its steps


def test_on_divergence_stop_fails_the_run_at_the_epoch_end(tiny, small_splits, tmp_path):
    """``training.on_divergence: stop``: the same diverging run fails at the end of the first epoch where the rule
    fires, with the log of its steps kept; a bad value of the setting is refused."""
    from repro.training import TrainingDiverged

    tok = load_tokenizer(tiny)
    settings = TrainSettings(lr=30.0, epochs=3, batch_size=8, micro_batch_size=8, max_length=256,
                             max_prompt_length=128, on_divergence="stop")
    with pytest.raises(TrainingDiverged, match=r"stopped after epoch [12] \(training.on_divergence: stop\): the "
                                               r"training loss rose from"):
        train(load_model(tiny), tok, small_splits["train"][:32], small_splits["dev"][:4], get_method("sft"),
              Context(n_vocab=len(tok), settings=settings), DecodeSettings(max_new_tokens=4, batch_size=4), tmp_path)
    epochs = {r["epoch"] for r in read_jsonl(tmp_path / "train_log.jsonl") if "step" in r}
    assert epochs and max(epochs) < 3
    with pytest.raises(ValueError, match="training.on_divergence must be 'warn' or 'stop', got 'halt'"):
        TrainSettings(lr=1e-3, epochs=1, on_divergence="halt")


def test_non_finite_loss_stops_before_the_update(tiny, small_splits, tmp_path):
    tok = load_tokenizer(tiny)
    model = load_model(tiny)
    before = [p.detach().clone() for p in model.parameters()]

    class Broken(type(get_method("sft"))):
        def loss(self, student, batch, ctx):
            out = get_method("sft").loss(student, batch, ctx)
            return {**out, "loss": out["loss"] * float("nan")}

    settings = TrainSettings(lr=1e-3, epochs=1, batch_size=8, micro_batch_size=8, max_length=256,
                             max_prompt_length=128)
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 1, step 1"):
        train(model, tok, small_splits["train"][:8], small_splits["dev"][:2], Broken(),
              Context(n_vocab=len(tok), settings=settings), DecodeSettings(max_new_tokens=2), tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_generation_leaves_the_global_random_state_alone(tiny, small_splits):
    tok = load_tokenizer(tiny)
    model = load_model(tiny)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(model, tok, [small_splits["dev"][0]["prompt"]], 10, DecodeSettings(max_new_tokens=3))
    assert torch.equal(torch.rand(3), expected)


def test_parameter_groups(tiny):
    """No weight decay on biases and norm weights; projectors in their own groups at projector_lr."""
    from repro.training import param_groups

    model = load_model(tiny)
    projectors = torch.nn.ModuleDict({"t2s": torch.nn.Linear(4, 3)})
    settings = TrainSettings(lr=2e-3, epochs=1, projector_lr=1e-3, weight_decay=0.01)
    groups = param_groups(model, projectors, settings)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in list(model.parameters()) + list(projectors.parameters()))
    for g in groups:
        assert all((p.ndim >= 2) == (g["weight_decay"] == 0.01) for p in g["params"])
    norms = [m.weight for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert norms and all(id(w) in no_decay for w in norms)
    assert [g["peak_lr"] for g in groups if any(p is projectors["t2s"].weight for p in g["params"])] == [1e-3]
    embedding = model.get_input_embeddings().weight
    assert [g["peak_lr"] for g in groups if any(p is embedding for p in g["params"])] == [2e-3]


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("method_name, stop_at", [("sft", 5), ("dskd", 3)])
def test_interrupted_run_resumes_to_the_same_weights(trained_tokenizers, small_splits, tmp_path, method_name,
                                                     stop_at):
    """Interrupt after some steps, train again in the same folder: the final weights (student and projectors)
    equal those of an uninterrupted run. Dropout is on, so the random state must be restored too."""
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    tiny = tmp_path / "model"
    init_model({"arch": "gpt2", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 256, "dropout": 0.1}, tok,
               tiny, seed=0)
    settings = TrainSettings(lr=3e-3, epochs=2, batch_size=8, micro_batch_size=4, max_length=256,
                             max_prompt_length=128, checkpoint_every=2)
    decode = DecodeSettings(max_new_tokens=3, no_repeat_ngram_size=0)
    rows, dev = small_splits["train"][:40], small_splits["dev"][:2]
    method = get_method(method_name)

    def run(out, method):
        model = load_model(tiny)
        teacher = load_model(tiny).eval() if method_name == "dskd" else None
        ctx = Context(n_vocab=len(tok), settings=settings, divergence="kl", teacher=teacher)
        summary = train(model, tok, rows, dev, method, ctx, decode, out)
        return model, ctx, summary

    reference, ref_ctx, ref_summary = run(tmp_path / "straight", method)

    class Breaks(type(method)):
        calls = 0

        def loss(self, student, batch, ctx):
            Breaks.calls += 1
            if Breaks.calls > stop_at * 2:  # two micro-batches per step
                raise _Interrupted
            return super().loss(student, batch, ctx)

    with pytest.raises(_Interrupted):
        run(tmp_path / "resumed", Breaks())
    assert (tmp_path / "resumed" / "resume" / "state.pt").exists()
    resumed, res_ctx, res_summary = run(tmp_path / "resumed", method)
    for a, b in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    if ref_ctx.modules is not None:
        for a, b in zip(ref_ctx.modules.parameters(), res_ctx.modules.parameters()):
            assert torch.equal(a, b)
    assert res_summary["steps"] == ref_summary["steps"]
    assert [h["dev_rougeL"] for h in res_summary["history"]] == [h["dev_rougeL"] for h in ref_summary["history"]]
    assert not (tmp_path / "resumed" / "resume").exists()
    straight_log = [r["loss"] for r in read_jsonl(tmp_path / "straight" / "train_log.jsonl") if "step" in r]
    resumed_log = [r["loss"] for r in read_jsonl(tmp_path / "resumed" / "train_log.jsonl") if "step" in r]
    assert straight_log == resumed_log
    # a resume state written with other settings is refused, not silently continued
    Breaks.calls = 0
    with pytest.raises(_Interrupted):
        run(tmp_path / "changed", Breaks())
    settings = TrainSettings(**{**asdict(settings), "lr": 1e-3})
    with pytest.raises(ValueError, match="resume state was written by a run with other settings"):
        run(tmp_path / "changed", method)
