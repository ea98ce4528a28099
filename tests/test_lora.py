"""LoRA training (peft): only adapters train, the best adapter is merged into a plain model, and a merged LoRA
teacher serves distillation."""
import pytest
import torch

from repro.cells import CellConfig, evaluate_cell, train_cell
from repro.io import read_json
from repro.models import add_lora, init_model, load_model
from repro.synthetic import write_splits
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
    return CellConfig(cell_id=f"p/{name}", pair="p", method=method, role="teacher" if name == "teacher" else "student",
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
    assert student["steps"] == 2 * 3 and (setup / "runs" / "dskd-kl" / "model" / "config.json").exists()
    scores = evaluate_cell(cfg)
    assert 0 <= scores["avg"]["mean"] <= 100
    assert read_json(setup / "runs" / "dskd-kl" / "train_summary.json")["config"]["training"]["lora"] == LORA


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
