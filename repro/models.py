"""Causal language models: build the miniature ones from ``transformers`` configs, load any one by id or path.

The miniature models use the architecture families of the paper's models (PAPER.md section 3): ``gpt2`` (GPT-2),
``llama`` (LLaMA-2, TinyLLaMA), ``mistral`` (Mistral) and ``qwen2`` (Qwen1.5, which ``transformers`` runs with the
Qwen2 architecture). They are randomly initialised, saved with ``save_pretrained``, and loaded back through
``AutoModelForCausalLM`` by path, so the training code is the same as for a hub id.
"""
from __future__ import annotations

import os

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from .io import atomic_path

ARCHS = ("gpt2", "llama", "mistral", "qwen2")


def build_config(arch: str, vocab_size: int, layers: int, hidden: int, heads: int, kv_heads: int | None = None,
                 intermediate: int | None = None, max_positions: int = 512, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, dropout: float | None = None):
    """Return a ``transformers`` config of family ``arch`` with the given sizes.

    ``intermediate`` defaults to 4x hidden for GPT-2 and about 8/3x hidden (rounded to 16) for the gated-MLP families.
    ``dropout`` defaults to each family's own (0.1 for GPT-2, none for the others).
    """
    if hidden % heads:
        raise ValueError(f"hidden={hidden} must be divisible by heads={heads}")
    special = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    if arch == "gpt2":
        drop = {} if dropout is None else {"resid_pdrop": dropout, "embd_pdrop": dropout, "attn_pdrop": dropout}
        # gelu_pytorch_tanh is GPT-2's own tanh-approximated GELU (gelu_new) as one fused kernel: the same function,
        # about a quarter faster on a CPU
        return transformers.GPT2Config(vocab_size=vocab_size, n_positions=max_positions, n_embd=hidden,
                                       n_layer=layers, n_head=heads, n_inner=intermediate,
                                       activation_function="gelu_pytorch_tanh", **special, **drop)
    kv_heads = kv_heads or heads
    if heads % kv_heads:
        raise ValueError(f"heads={heads} must be divisible by kv_heads={kv_heads}")
    intermediate = intermediate or 16 * round(hidden * 8 / 3 / 16)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=False, **special,
                  **({} if dropout is None else {"attention_dropout": dropout}))
    if arch == "llama":
        return transformers.LlamaConfig(**common)
    if arch == "mistral":
        return transformers.MistralConfig(sliding_window=max_positions, **common)
    if arch == "qwen2":
        return transformers.Qwen2Config(**common)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")


def padded_vocab_size(n_tokens: int, multiple: int | None) -> int:
    """Embedding rows for a tokenizer of ``n_tokens`` ids: rounded up to ``multiple`` when given.

    Qwen1.5 has 151,936 embedding rows for 151,646 token ids (PAPER.md section 3); a miniature Qwen-like model
    keeps such padded rows so the code that must handle them is exercised.
    """
    if not multiple:
        return n_tokens
    return -(-n_tokens // multiple) * multiple


def init_model(spec: dict, tokenizer, out_dir: str | os.PathLike, seed: int) -> None:
    """Build a randomly initialised model from a config-file model ``spec`` and save it (with its tokenizer).

    ``spec`` keys: ``arch``, ``layers``, ``hidden``, ``heads``, optional ``kv_heads``, ``intermediate``,
    ``max_positions``, ``dropout``, ``pad_vocab_to_multiple_of``.
    """
    config = build_config(
        spec["arch"], padded_vocab_size(len(tokenizer), spec.get("pad_vocab_to_multiple_of")),
        spec["layers"], spec["hidden"], spec["heads"], spec.get("kv_heads"), spec.get("intermediate"),
        spec.get("max_positions", 512), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
        spec.get("dropout"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def load_model(name_or_path: str | os.PathLike, dtype: str = "float32"):
    """Load a causal LM by hub id or local path, in ``dtype`` (``float32`` or ``bfloat16``)."""
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


LORA_KEYS = ("rank", "alpha", "dropout", "target_modules")


def add_lora(model, spec: dict):
    """Wrap ``model`` with LoRA adapters (peft): ``spec`` holds ``rank``, ``alpha``, ``dropout`` and
    ``target_modules`` (module names, e.g. ``["q_proj", "v_proj"]`` for LLaMA, ``["c_attn"]`` for GPT-2). Only the
    adapters are trainable."""
    unknown = set(spec) - set(LORA_KEYS)
    missing = set(LORA_KEYS) - set(spec)
    if unknown or missing:
        raise ValueError(f"lora settings: expected keys {list(LORA_KEYS)}, got unknown {sorted(unknown)} and "
                         f"missing {sorted(missing)}")
    config = LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=list(spec["target_modules"]), task_type="CAUSAL_LM",
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2's Conv1D stores W transposed
    return get_peft_model(model, config)


def merge_lora(base: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike, tokenizer) -> None:
    """Load ``base``, apply the LoRA adapter saved in ``adapter``, merge it into the weights and save the plain
    model (with ``tokenizer``) to ``out_dir``, atomically: a LoRA teacher is merged before distillation."""
    merged = PeftModel.from_pretrained(load_model(base), adapter).merge_and_unload()
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
