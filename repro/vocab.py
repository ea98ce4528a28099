"""Tokenizers: train the miniature ones, load any one by Hugging Face id or local path.

The miniature tokenizers copy the kinds of the paper's models (PAPER.md section 3), trained on the project's own
corpus with the ``tokenizers`` library:

- ``byte_bpe``: byte-level BPE as in GPT-2 (``<|endoftext|>`` is BOS, EOS and padding). With ``split_digits`` it
  splits numbers into single digits first, as Qwen's pre-tokenizer does, so a GPT-2-like and a Qwen-like tokenizer
  trained on the same text segment it differently.
- ``sentencepiece_bpe``: sentencepiece-style BPE as in LLaMA and Mistral: words start with the ``▁`` mark, digits
  and punctuation are split off, unknown characters fall back to the 256 byte tokens ``<0x00>``..``<0xFF>``;
  specials ``<unk>``, ``<s>``, ``</s>``.

Both are saved with ``save_pretrained`` and load back through ``AutoTokenizer`` by path, exactly like a hub id.
"""
from __future__ import annotations

import json
import os
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .io import atomic_path

KINDS = ("byte_bpe", "sentencepiece_bpe")
_BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def _train_byte_bpe(texts: Iterable[str], vocab_size: int, split_digits: bool):
    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if split_digits else byte_level)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    specials = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>"}
    return tok, specials


def _train_sentencepiece_bpe(texts: Iterable[str], vocab_size: int):
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first"),
                                     decoders.ByteFallback(), decoders.Fuse()])
    n_learned = vocab_size - len(_BYTE_TOKENS)
    if n_learned <= len(specials) + 64:
        raise ValueError(f"sentencepiece_bpe needs vocab_size > {len(_BYTE_TOKENS) + len(specials) + 64} "
                         f"(256 byte-fallback tokens plus the learned ones), got {vocab_size}")
    trainer = trainers.BpeTrainer(vocab_size=n_learned, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # The byte-fallback tokens are ordinary vocabulary entries (ids 3..258, as in LLaMA), not added tokens, so
    # that a literal "<0x41>" in text is not read as a byte. Insert them after the specials and shift the rest.
    spec = json.loads(tok.to_str())
    learned = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    order = [t for t, _ in learned if t in specials] + _BYTE_TOKENS + [t for t, _ in learned if t not in specials
                                                                       and t not in _BYTE_TOKENS]
    spec["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    for added in spec["added_tokens"]:
        added["id"] = spec["model"]["vocab"][added["content"]]
    tok = Tokenizer.from_str(json.dumps(spec))
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}


def train_tokenizer(kind: str, vocab_size: int, texts: Iterable[str], out_dir: str | os.PathLike,
                    split_digits: bool = False) -> None:
    """Train a tokenizer of ``kind`` (one of ``KINDS``) on ``texts`` and save it with ``save_pretrained``.

    ``split_digits`` applies to ``byte_bpe`` only (``sentencepiece_bpe`` always splits digits, as LLaMA does).
    """
    texts = list(texts)
    if kind == "byte_bpe":
        tok, specials = _train_byte_bpe(texts, vocab_size, split_digits)
    elif kind == "sentencepiece_bpe":
        tok, specials = _train_sentencepiece_bpe(texts, vocab_size)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {list(KINDS)}")
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **specials)
    with atomic_path(out_dir) as tmp:
        wrapped.save_pretrained(tmp)


def load_tokenizer(name_or_path: str | os.PathLike):
    """Load a tokenizer by hub id or local path; give it a padding token (EOS) if it has none.

    The data pipeline masks padding out of both attention and labels, so padding with EOS is safe; prompts are
    left-padded for generation (PAPER.md section 4).
    """
    tok = AutoTokenizer.from_pretrained(str(name_or_path))
    if tok.eos_token_id is None:
        raise ValueError(f"tokenizer {name_or_path}: has no EOS token; responses must end with one")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def corpus_texts(rows: Iterable[dict]) -> Iterable[str]:
    """The text a miniature tokenizer is trained on: every prompt and every output of the given examples."""
    for row in rows:
        yield row["prompt"]
        outputs = row["output"] if isinstance(row["output"], list) else [row["output"]]
        yield from outputs

