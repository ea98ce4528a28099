"""LoRA training (peft): only adapters train, the best adapter is merged into a plain model, and a merged LoRA
teacher serves distillation."""
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import repro.cells
from conftest import REPO
from repro.cells import CellConfig, evaluate_cell, train_cell
from repro.generation import DecodeSettings
from repro.io import read_json
from repro.methods import get_method
from repro.models import add_lora, init_model, load_model, merge_lora
from repro.settings import TrainSettings
from repro.synthetic import write_splits
from repro.training import build_context, train
from repro.vocab import load_tokenizer

LORA = {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_tokenizers, small_splits):
    root = tmp_path_factory.mktemp("lora")
    splits = {"train": small_splits["train"][:48], "dev": small_splits["dev"][:4],
              **{k: v[:2] for k, v in small_splits.items() if k not in ("train", "dev")}}
    write_splits(splits, root / "data")
    tok = load_tokenizer(trained_tokenizers["llama"])
    for name, width in (("teacher", 48), ("student", 32)):
        init_model({"arch": "llama", "layers": 1, "hidden": width, "heads": 2, "max_positions": 256,
                    "dropout": 0.0}, tok, root / name, seed=1)
    return root


def _cell(root, name, method, model, lora=None, teacher=None, divergence=None):
    training = {"lr": 5e-3, "epochs": 2, "batch_size": 16, "micro_batch_size": 16, "max_length": 256,
                "max_prompt_length": 128, "dev_seeds": [10], **({"lora": lora} if lora else {})}
    role = "teacher" if name.startswith("teacher") else "student"
    return CellConfig(cell_id=f"p/{name}", pair="p", method=method, role=role,
                      model=str(model), teacher=str(teacher) if teacher else None, divergence=divergence,
                      data_dir=str(root / "data"),
                      out_dir=str(root / "runs" / name), training=training,
                      evaluation={"seeds": [10], "max_new_tokens": 6, "batch_size": 8})


def test_lora_wraps_only_the_named_modules(setup):
    model = add_lora(load_model(setup / "teacher"), LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)
    with pytest.raises(ValueError, match="missing"):
        add_lora(load_model(setup / "teacher"), {"rank": 4})


def test_lora_wrap_and_merge_warn_nothing(setup, tmp_path):
    """peft asks the model a question transformers 5 deprecates: no FutureWarning reaches a rendered notebook."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = add_lora(load_model(setup / "teacher"), LORA)
        model.save_pretrained(tmp_path / "adapter")
        merge_lora(setup / "teacher", tmp_path / "adapter", tmp_path / "merged", load_tokenizer(setup / "teacher"))
    assert (tmp_path / "merged" / "config.json").exists()


def test_lora_teacher_is_merged_and_serves_distillation(setup):
    from peft import PeftModel

    base = load_model(setup / "teacher")
    summary = train_cell(_cell(setup, "teacher", "sft", setup / "teacher", lora=LORA))
    run = setup / "runs" / "teacher"
    assert summary["checkpoint"] == str(run / "adapter")
    assert summary["trainable_parameters"] < summary["parameters"] / 5
    merged = load_model(run / "model")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # Merged weights differ from the base only in the adapted projections, and compute what base + adapter does.
    changed = {n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
    assert changed and all("q_proj" in n or "v_proj" in n for n in changed)
    with_adapter = PeftModel.from_pretrained(load_model(setup / "teacher"), run / "adapter").eval()
    ids = torch.tensor([[5, 9, 30, 41, 7]])
    torch.testing.assert_close(merged.eval()(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)
    # The merged teacher drives DSKD for a LoRA student (hidden states are read through the peft wrapper).
    cfg = _cell(setup, "dskd-kl", "dskd", setup / "student", lora=LORA, teacher=run / "model", divergence="kl")
    student = train_cell(cfg)
    assert student["steps"] == 2 * 3
    scores = evaluate_cell(cfg)
    assert 0 <= scores["avg"]["mean"] <= 100
    assert read_json(setup / "runs" / "dskd-kl" / "train_summary.json")["config"]["training"]["lora"] == LORA


def test_a_lora_students_model_is_its_adapter_and_loads_as_the_merge(setup, tmp_path):
    """A LoRA student (read by its evaluation and Figure 3 only) keeps its best adapter as its model folder, a few
    hundred kB here instead of a merged copy of its base; ``load_model`` reads it as the base with the adapter merged,
    the same weights ``merge_lora`` saves, in fp32 and in bf16."""
    from safetensors.torch import load_file

    from repro.models import is_adapter

    cfg = _cell(setup, "kd-kl", "kd", setup / "student", lora=LORA, teacher=setup / "teacher", divergence="kl")
    cfg = replace(cfg, training={**cfg.training, "epochs": 1})
    summary = train_cell(cfg)
    run = setup / "runs" / "kd-kl"
    assert summary["checkpoint"] == str(run / "model") and is_adapter(run / "model")
    assert not (run / "adapter").exists() and not (run / "model" / "config.json").exists()
    stored = sum(f.stat().st_size for f in (run / "model").iterdir())
    assert stored < 0.5 * (setup / "student" / "model.safetensors").stat().st_size
    tok = load_tokenizer(run / "model")
    for dtype in ("float32", "bfloat16"):
        merge_lora(setup / "student", run / "model", tmp_path / dtype, tok, dtype)
        expected = load_file(tmp_path / dtype / "model.safetensors")
        loaded = load_model(run / "model", dtype).state_dict()
        assert {k: v for k, v in loaded.items() if k in expected}.keys() == expected.keys()
        assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert 0 <= evaluate_cell(cfg)["avg"]["mean"] <= 100


def test_lora_on_gpt2_conv1d_merges_exactly(tmp_path, trained_tokenizers):
    """GPT-2 stores its attention weights transposed (Conv1D); the adapter must merge to the same function."""
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    init_model({"arch": "gpt2", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 64, "dropout": 0.0}, tok,
               tmp_path / "base", seed=0)
    model = add_lora(load_model(tmp_path / "base"), {**LORA, "target_modules": ["c_attn"]}).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at zero; make the adapter do something
    ids = torch.tensor([[3, 8, 21, 40]])
    expected = model(ids).logits
    torch.testing.assert_close(model.merge_and_unload()(ids).logits, expected, atol=1e-5, rtol=1e-5)


class _Interrupted(Exception):
    pass


def _float_numels(obj) -> tuple[int, int]:
    """(elements of the non-scalar floating-point tensors, count of the scalar ones) anywhere in ``obj``; the random
    generators' byte states are not counted."""
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            return 0, 0
        return (0, 1) if obj.dim() == 0 else (obj.numel(), 0)
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    sums = [_float_numels(v) for v in values]
    return sum(s[0] for s in sums), sum(s[1] for s in sums)


@pytest.mark.parametrize("method_name", ["sft", "dskd"])
def test_interrupted_lora_run_resumes_to_the_same_weights_from_a_state_without_its_base(setup, small_splits,
                                                                                       tmp_path, method_name):
    """A LoRA run (adapter dropout on, so the random state matters) interrupted mid-epoch and run again in the same
    folder ends with the weights of an uninterrupted run, byte for byte; its resume state holds the adapters (and
    DSKD's projectors) with their two AdamW moments, far less than the frozen base; a resume on a base whose files
    changed is refused."""
    base = tmp_path / "base"
    shutil.copytree(setup / "student", base)
    tok = load_tokenizer(base)
    settings = TrainSettings(lr=3e-3, epochs=2, batch_size=8, micro_batch_size=4, max_length=256,
                             max_prompt_length=128, checkpoint_every=2, lora={**LORA, "dropout": 0.1})
    rows, dev = small_splits["train"][:24], small_splits["dev"][:2]
    decode = DecodeSettings(max_new_tokens=3, no_repeat_ngram_size=0)
    method = get_method(method_name)
    teacher = load_model(setup / "teacher").eval().requires_grad_(False) if method_name == "dskd" else None

    def run(out, method):
        torch.manual_seed(0)  # the adapters' initialisation, as train_cell seeds it
        student = add_lora(load_model(base), settings.lora)
        ctx = build_context(settings, tok, "kl" if method_name == "dskd" else None, teacher)
        summary = train(student, tok, rows, dev, method, ctx, decode, out)
        return student, ctx, summary

    class Breaks(type(method)):
        calls = 0

        def loss(self, student, batch, ctx):
            Breaks.calls += 1
            if Breaks.calls > 4 * 2:  # the fifth step (of 3 + 3), after the state saved at step 4
                raise _Interrupted
            return super().loss(student, batch, ctx)

    reference, ref_ctx, ref_summary = run(tmp_path / "straight", method)
    with pytest.raises(_Interrupted):
        run(tmp_path / "resumed", Breaks())
    state = torch.load(tmp_path / "resumed" / "resume" / "state.pt", weights_only=False)
    assert state["step"] == 4 and state["epoch"] == 2
    trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    if ref_ctx.modules is not None:
        trainable += sum(p.numel() for p in ref_ctx.modules.parameters())
    frozen = sum(p.numel() for p in reference.parameters() if not p.requires_grad)
    held, scalars = _float_numels(state)
    assert set(state["student"]) == {n for n, p in reference.named_parameters() if p.requires_grad}
    assert all("lora_" in n for n in state["student"])
    assert 3 * trainable <= held <= 1.05 * 3 * trainable  # weights and AdamW's two moments; plus the step counters
    assert scalars <= len(state["optimizer"]["state"]) and held < frozen / 3
    resumed, res_ctx, res_summary = run(tmp_path / "resumed", method)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    if ref_ctx.modules is not None:
        for a, b in zip(ref_ctx.modules.parameters(), res_ctx.modules.parameters()):
            assert torch.equal(a, b)
    assert res_summary["steps"] == ref_summary["steps"] == 6
    assert [h["dev_rougeL"] for h in res_summary["history"]] == [h["dev_rougeL"] for h in ref_summary["history"]]
    assert not (tmp_path / "resumed" / "resume").exists()
    # the state holds no base: one whose files changed since (here a weight file's mtime) is refused, naming it
    Breaks.calls = 0
    with pytest.raises(_Interrupted):
        run(tmp_path / "changed", Breaks())
    weights = base / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match=r"holds the trained parameters only, and the frozen base they were trained "
                                         r"on is not the one loaded now \(.*base: model.safetensors changed"):
        run(tmp_path / "changed", method)


def test_a_bf16_merge_is_the_fp32_merge_cast_once(setup, tmp_path):
    """merge_lora merges in fp32 (base and fp32 adapter), then casts: the saved bf16 weights equal the fp32 merge
    cast to bf16, element for element, and are stored as bf16 (half the bytes of the fp32 merge)."""
    model = add_lora(load_model(setup / "teacher"), LORA)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # B starts at zero; make the adapter do something
    model.save_pretrained(tmp_path / "adapter")
    tok = load_tokenizer(setup / "teacher")
    for dtype in ("float32", "bfloat16"):
        merge_lora(setup / "teacher", tmp_path / "adapter", tmp_path / dtype, tok, dtype)
    full, half = (load_file(tmp_path / dtype / "model.safetensors") for dtype in ("float32", "bfloat16"))
    assert {t.dtype for t in full.values()} == {torch.float32} and {t.dtype for t in half.values()} == {torch.bfloat16}
    assert full.keys() == half.keys() and all(torch.equal(half[k], full[k].to(torch.bfloat16)) for k in full)
    assert (tmp_path / "bfloat16" / "model.safetensors").stat().st_size < 0.6 * (
        tmp_path / "float32" / "model.safetensors").stat().st_size


def test_a_bf16_lora_run_holds_its_base_in_bf16_and_saves_the_merge_in_bf16(setup, monkeypatch):
    """Under bf16 (``precision: bf16``, here on the CPU) a LoRA run's frozen base is held in bf16 and its adapters
    in fp32 (the master weights AdamW updates, in the adapter saved); the merged model is saved in bf16, the dtype
    its readers load it in. Under fp32 everything stays fp32."""
    seen = {}
    real_train = repro.cells.train

    def recording_train(student, *args, **kwargs):
        seen[student.name_or_path] = ({p.dtype for p in student.parameters() if not p.requires_grad},
                                      {p.dtype for p in student.parameters() if p.requires_grad})
        return real_train(student, *args, **kwargs)

    monkeypatch.setattr(repro.cells, "train", recording_train)
    for precision in ("bf16", "fp32"):
        AcceleratorState._reset_state(reset_partial_state=True)  # one process, one precision: start another
        cfg = _cell(setup, f"teacher-{precision}", "sft", setup / "teacher", lora=LORA)
        cfg = replace(cfg, training={**cfg.training, "epochs": 1, "precision": precision})
        try:
            train_cell(cfg)
        finally:  # the tests after this one train in fp32
            AcceleratorState._reset_state(reset_partial_state=True)
        frozen, trained = seen.pop(str(setup / "teacher"))
        run = setup / "runs" / f"teacher-{precision}"
        merged = {t.dtype for t in load_file(run / "model" / "model.safetensors").values()}
        adapter = {t.dtype for t in load_file(run / "adapter" / "adapter_model.safetensors").values()}
        expected = torch.bfloat16 if precision == "bf16" else torch.float32
        assert (frozen, trained, merged, adapter) == ({expected}, {torch.float32}, {expected}, {torch.float32})


def test_state_benchmark_measures_both_sizes_and_both_fingerprints(tmp_path, trained_tokenizers):
    """scripts/benchmark_states.py at tiny shapes: the resume state before (whole state_dict) is larger than after
    (trained only), both fingerprints are timed (no timing is asserted), and the paper's LoRA models are counted."""
    out = tmp_path / "states.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_states.py"), "--tokenizer",
                           str(trained_tokenizers["llama"]), "--model", "1", "32", "2", "--rank", "4", "--rounds", "2",
                           "--paper", str(REPO / "config" / "paper.yaml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = read_json(out)
    state, fingerprint = result["state"], result["fingerprint"]
    assert state["trainable"] == 2 * 2 * 4 * 32 and state["state_bytes_before"] > state["state_bytes_after"]
    assert fingerprint["files"] >= 2 and fingerprint["cold_s"] > 0 and fingerprint["memoised_s"] > 0
    assert {r["model"] for r in result["paper_shapes"]} == {"llama2_teacher", "tinyllama_student", "mistral_teacher"}
    assert all(r["state_bytes_after"] == 12 * r["trainable"] for r in result["paper_shapes"])
    assert "before/after" in done.stdout and "cold/memoised" in done.stdout
