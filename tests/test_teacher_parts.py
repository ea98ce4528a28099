"""A cell that reads the teacher-state cache holds only the teacher's head (and, for DSKD-CMA, its input
embeddings), read by name from the checkpoint: the same tensors as the whole model's, the same loss terms and
gradients as the whole teacher with the cache and as the live teacher, and a fraction of the teacher's parameters."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_teacher_states import MAX_LENGTH, PAIRS, _cell, assert_same_step, cached_set, step_terms

from conftest import make_pair
from repro import cells, teacher_states
from repro.data import encode_dataset
from repro.methods import get_method
from repro.models import TeacherParts, count_parameters, load_model, load_teacher_parts
from repro.synthetic import write_splits
from repro.vocab import load_tokenizer

ARCHS = {"gpt2": "gpt2", "llama": "llama", "mistral": "mistral", "qwen2": "qwen"}  # architecture -> tokenizer


@pytest.fixture(scope="module")
def teachers(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("parts")
    return {arch: make_pair(root / arch, trained_tokenizers, (arch, tok), (arch, tok))[0]
            for arch, tok in ARCHS.items()}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("parts-pairs")
    return {name: make_pair(root / name, trained_tokenizers, teacher, student, seeds=(5, 5), max_positions=MAX_LENGTH)
            for name, (teacher, student, _) in PAIRS.items()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_parts_hold_the_models_own_head_and_embeddings(teachers, arch, dtype):
    full = load_model(teachers[arch], dtype)
    full_head, full_embed = full.get_output_embeddings(), full.get_input_embeddings()
    for embeddings in (False, True):
        parts = load_teacher_parts(teachers[arch], dtype, embeddings=embeddings)
        head = parts.get_output_embeddings()
        assert type(head) is type(full_head) and head.weight.dtype == full_head.weight.dtype
        assert torch.equal(head.weight, full_head.weight)
        assert (head.bias is None) == (getattr(full_head, "bias", None) is None)
        assert not any(p.requires_grad for p in parts.parameters())
        assert parts.config.to_dict() == full.config.to_dict()
        rows, width = full_head.weight.shape
        if embeddings:
            embed = parts.get_input_embeddings()
            assert type(embed) is type(full_embed) and torch.equal(embed.weight, full_embed.weight)
            ids = torch.arange(rows)
            assert torch.equal(embed(ids), full_embed(ids))
            assert (embed.weight is head.weight) == (arch == "gpt2")  # GPT-2 ties them: one tensor, counted once
        else:
            with pytest.raises(ValueError, match="hold no input embeddings; .* teacher_embeddings"):
                parts.get_input_embeddings()
        assert count_parameters(parts) == rows * width * (2 if embeddings and arch != "gpt2" else 1)
    if arch == "qwen2":  # the padded rows beyond the tokenizer come along, as in the whole model
        assert rows > len(load_tokenizer(teachers[arch]))


def test_parts_are_no_model(teachers):
    parts = load_teacher_parts(teachers["llama"], embeddings=True)
    assert parts.device == torch.device("cpu") and parts.dtype == torch.float32 and not parts.training
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"only the teacher's head and input embeddings are loaded .* "
                                           r"training.teacher_cache: false"):
        parts(input_ids=ids)
    with pytest.raises(RuntimeError, match=str(teachers["llama"])):
        parts.base_model(input_ids=ids)


def test_keys_with_or_without_the_base_prefix(teachers, tmp_path):
    """GPT-2's hub checkpoint names ``wte.weight`` what the model calls ``transformer.wte.weight`` (and holds no
    ``lm_head.weight``, tied to it); a checkpoint with the prefix on every key loads as well."""
    source = teachers["gpt2"]
    tensors = load_file(source / "model.safetensors")
    assert "transformer.wte.weight" in tensors and "lm_head.weight" not in tensors
    stripped = tmp_path / "stripped"
    stripped.mkdir()
    (stripped / "config.json").write_text((source / "config.json").read_text())
    save_file({k.removeprefix("transformer."): v for k, v in tensors.items()}, stripped / "model.safetensors")
    assert "wte.weight" in load_file(stripped / "model.safetensors")
    expected = load_model(source).get_output_embeddings().weight
    parts = load_teacher_parts(stripped, embeddings=True)
    assert torch.equal(parts.get_output_embeddings().weight, expected)
    assert parts.get_input_embeddings().weight is parts.get_output_embeddings().weight


def test_a_sharded_checkpoint_loads(teachers, tmp_path):
    full = load_model(teachers["llama"])
    full.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert index["lm_head.weight"] != index["model.embed_tokens.weight"]  # in two of several shards
    assert not (tmp_path / "model.safetensors").exists()
    parts = load_teacher_parts(tmp_path, embeddings=True)
    assert torch.equal(parts.get_output_embeddings().weight, full.get_output_embeddings().weight)
    assert torch.equal(parts.get_input_embeddings().weight, full.get_input_embeddings().weight)


def test_a_missing_head_is_named_with_its_file(teachers, tmp_path):
    source = teachers["llama"]
    (tmp_path / "config.json").write_text((source / "config.json").read_text())
    tensors = load_file(source / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if k != "lm_head.weight"}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'model.safetensors'}: no tensor 'lm_head.weight' for the "
                                         rf"teacher's output head"):
        load_teacher_parts(tmp_path)
    save_file({**tensors, "lm_head.weight": tensors["lm_head.weight"][:-1]}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensor 'lm_head.weight' has shape \[\d+, 48\], the model's config"):
        load_teacher_parts(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}: no model.safetensors or model.safetensors.index.json"):
        load_teacher_parts(tmp_path)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_parts_give_the_terms_of_the_whole_teacher(pairs, small_splits, pair):
    """KD, DSKD, ULD, MinED and DSKD-CMA: the parts with the cache, the whole teacher with the cache and the live
    teacher give the same terms and gradients (each method's parts chosen by its ``teacher_embeddings`` trait)."""
    teacher_dir, student_dir = pairs[pair]
    s_tok, t_tok = load_tokenizer(student_dir), load_tokenizer(teacher_dir)
    teacher = load_model(teacher_dir).eval().requires_grad_(False)
    cross = pair == "cross"
    encoded, states = cached_set(teacher, small_splits["train"][:10], s_tok, t_tok, cross)
    for spec in PAIRS[pair][2]:
        embeddings = get_method(spec.partition(":")[0]).teacher_embeddings
        assert embeddings == spec.startswith("dskd_cma")
        parts = load_teacher_parts(teacher_dir, embeddings=embeddings)
        live = step_terms(spec, teacher, None, encoded, student_dir, s_tok, t_tok, cross)
        whole = step_terms(spec, teacher, states, encoded, student_dir, s_tok, t_tok, cross)
        from_parts = step_terms(spec, parts, states, encoded, student_dir, s_tok, t_tok, cross)
        assert_same_step(spec, live, from_parts)
        assert_same_step(spec, whole, from_parts)
    if cross:  # the trait is what DSKD-CMA needs: without the embeddings, or without the cache, it says so
        with pytest.raises(ValueError, match="hold no input embeddings"):
            step_terms("dskd_cma:kl", load_teacher_parts(teacher_dir), states, encoded, student_dir, s_tok, t_tok,
                       cross)
        with pytest.raises(RuntimeError, match="asked to run its body"):
            step_terms("uld", load_teacher_parts(teacher_dir), None, encoded, student_dir, s_tok, t_tok, cross)


def test_a_cached_cell_holds_only_the_parts(pairs, small_splits, tmp_path):
    """``train_cell`` with the cache on a tiny LLaMA pair: the teacher it holds has the head's parameters (KD) or
    the head's and the input embeddings' (DSKD-CMA), and no more; without the cache the whole teacher."""
    splits = {"train": small_splits["train"][:8], "dev": small_splits["dev"][:2],
              **{k: v[:2] for k, v in small_splits.items() if k not in ("train", "dev")}}
    write_splits(splits, tmp_path / "data")
    teacher_dir = pairs["same"][0]
    t_tok = load_tokenizer(teacher_dir)
    full = load_model(teacher_dir).eval()
    cache = tmp_path / "states.pt"
    encoded = encode_dataset(splits["train"], t_tok, MAX_LENGTH, 128)
    expected = teacher_states.fingerprint(teacher_dir, tmp_path / "data" / "train.jsonl", MAX_LENGTH, 128, "float32")
    teacher_states.build(full, encoded, t_tok.pad_token_id, expected, cma=("official",), max_length=MAX_LENGTH
                         ).save(cache)
    rows, width = full.get_output_embeddings().weight.shape
    whole = count_parameters(full)
    for method, divergence, held in (("kd", "kl", rows * width), ("dskd_cma", "kl", 2 * rows * width)):
        cfg = _cell(tmp_path, pairs, cache, method, method, divergence)
        summary = cells.train_cell(cfg)
        assert summary["steps"] == 2 and summary["teacher_parameters"] == held
        assert isinstance(cells._frozen_teacher(cfg, get_method(method), "float32", True), TeacherParts)
        assert count_parameters(cells._frozen_teacher(cfg, get_method(method), "float32", False)) == whole
    assert rows * width < whole / 3 and 2 * rows * width < whole
