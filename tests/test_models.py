"""Tiny random models of every architecture family: save/load round trips and real training steps on CPU."""
import json

import pytest
import torch

from conftest import make_context
from repro.data import collate, encode_dataset
from repro.losses import cross_entropy_sum
from repro.methods import get_method
from repro.models import ARCHS, build_config, init_model, load_model, padded_vocab_size
from repro.vocab import load_tokenizer

TOKENIZER_OF = {"gpt2": "gpt2", "llama": "llama", "mistral": "mistral", "qwen2": "qwen"}


def _spec(arch, **extra):
    return {"arch": arch, "layers": 2, "hidden": 32, "heads": 2, "max_positions": 256, **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("models")
    out = {}
    for arch in ARCHS:
        tok = load_tokenizer(trained_tokenizers[TOKENIZER_OF[arch]])
        extra = {"pad_vocab_to_multiple_of": 64, "kv_heads": 1} if arch == "qwen2" else {}
        init_model(_spec(arch, **extra), tok, root / arch, seed=0)
        out[arch] = root / arch
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_through_auto_classes(built, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(built[arch]))
    tok = AutoTokenizer.from_pretrained(str(built[arch]))
    assert model.config.model_type == arch
    again = load_model(built[arch])
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)


def test_padded_vocabulary_rows(built):
    tok = load_tokenizer(built["qwen2"])
    model = load_model(built["qwen2"])
    rows = model.get_output_embeddings().weight.shape[0]
    assert rows == padded_vocab_size(len(tok), 64) and rows % 64 == 0 and rows > len(tok)
    assert padded_vocab_size(100, None) == 100 and padded_vocab_size(100, 64) == 128


def test_logits_beyond_the_tokenizer_are_cut(built, small_splits):
    tok = load_tokenizer(built["qwen2"])
    model = load_model(built["qwen2"])
    batch = collate(encode_dataset(small_splits["train"][:2], tok, 128, 64), tok.pad_token_id)
    terms = get_method("sft").loss(model, batch, make_context(len(tok)))
    logits = model(input_ids=batch["input_ids"]).logits[..., : len(tok)]
    assert torch.allclose(terms["ce"], cross_entropy_sum(logits, batch["labels"]))


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="must divide the hidden size"):
        build_config("llama", 100, 2, 30, 4)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_config("bert", 100, 2, 32, 2)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])  # a tied head and an untied one
def test_a_model_is_saved_in_the_checkpoint_dtype_and_left_as_it_was(built, arch, tmp_path):
    """``save_model`` in bf16 writes each tensor of the fp32 model cast once (a tied head saved once, as
    ``save_pretrained`` saves it), half the bytes, with the config's dtype; the live model keeps its fp32 weights.
    In the model's own dtype it writes exactly what ``save_pretrained`` writes."""
    from safetensors.torch import load_file

    from repro.models import save_model

    model, tok = load_model(built[arch]), load_tokenizer(built[arch])
    before = {name: t.clone() for name, t in model.state_dict().items()}
    model.save_pretrained(tmp_path / "plain")
    save_model(model, tok, tmp_path / "float32", "float32")
    save_model(model, tok, tmp_path / "bfloat16", "bfloat16")
    plain = (tmp_path / "plain" / "model.safetensors").read_bytes()
    assert (tmp_path / "float32" / "model.safetensors").read_bytes() == plain
    full, half = (load_file(tmp_path / d / "model.safetensors") for d in ("float32", "bfloat16"))
    assert full.keys() == half.keys()
    for name, tensor in full.items():
        assert half[name].dtype == torch.bfloat16 and torch.equal(half[name], tensor.to(torch.bfloat16)), name
    size = (tmp_path / "bfloat16" / "model.safetensors").stat().st_size
    assert size < 0.55 * len(plain)
    assert json.loads((tmp_path / "bfloat16" / "config.json").read_text())["dtype"] == "bfloat16"
    again = load_model(tmp_path / "bfloat16", "float32").state_dict()
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, before[name]), name
        assert torch.equal(again[name], tensor.to(torch.bfloat16).float()), name
    if arch == "gpt2":
        assert again["lm_head.weight"].data_ptr() == again["transformer.wte.weight"].data_ptr()
