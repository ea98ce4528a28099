"""Instruction data: load the processed JSONL files, tokenise them as the paper does, batch them.

Tokenisation (PAPER.md section 4): no BOS for any model; the prompt is truncated to ``max_prompt_length`` tokens;
the response is followed by EOS; the whole sequence is cut to ``max_length`` tokens; only response tokens (and the
EOS) carry labels. Sequences are stored already shifted: ``input_ids[t]`` predicts ``labels[t]``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from .rows import read_examples, references

IGNORE = -100


def load_examples(path: str | os.PathLike, skip_malformed: bool = False) -> list[dict]:
    """The rows of a processed JSONL file, every one checked (``repro.rows.scan_examples``); skipped rows are
    reported as a warning."""
    rows, skipped = read_examples(path, skip_malformed)
    for problem in skipped:
        logging.getLogger("repro").warning("skipped a malformed row: %s", problem)
    return rows


@dataclass
class Encoded:
    """One tokenised example; ``teacher`` holds the same example in the teacher's tokenizer when the two models
    have different vocabularies (cross-vocabulary methods)."""
    input_ids: list[int]
    labels: list[int]
    teacher: "Encoded | None" = None
    # MinED: for every position, the teacher position aligned to it one-to-one, else -1
    teacher_positions: list[int] | None = None
    # DSKD-CMA: the example's pieces [3, 3] of the teacher-side standard deviations (repro.methods.cma_example_sums)
    cma_sums: object = None
    # position of the example in its training set (encode_dataset); batches carry it as ``example_index``, by which
    # the teacher-state cache finds the example's rows (repro.teacher_states)
    index: int | None = None


def encode_example(row: dict, tokenizer, max_length: int, max_prompt_length: int) -> Encoded:
    """Tokenise one training example (its first reference is the target)."""
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"][:max_prompt_length]
    if not prompt:
        raise ValueError(f"example {row['instruction'][:60]!r}: empty prompt")
    response = tokenizer(references(row)[0], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    seq = (prompt + response)[: max_length + 1]
    labels = ([IGNORE] * (len(prompt) - 1) + seq[len(prompt):])[: len(seq) - 1]
    return Encoded(input_ids=seq[:-1], labels=labels)


def encode_dataset(rows: list[dict], tokenizer, max_length: int, max_prompt_length: int,
                   teacher_tokenizer=None) -> list[Encoded]:
    """Tokenise all rows (also with ``teacher_tokenizer`` when given, into ``Encoded.teacher``); rows whose
    response is cut away entirely raise an error (nothing is dropped silently)."""
    out = []
    for i, row in enumerate(rows):
        enc = encode_example(row, tokenizer, max_length, max_prompt_length)
        if teacher_tokenizer is not None:
            enc.teacher = encode_example(row, teacher_tokenizer, max_length, max_prompt_length)
        for side in (enc, enc.teacher):
            if side is not None and all(label == IGNORE for label in side.labels):
                raise ValueError(f"example {i} ({row['instruction'][:60]!r}): no response token fits in "
                                 f"max_length={max_length}")
        enc.index = i
        out.append(enc)
    return out


def collate(batch: list[Encoded], pad_id: int, teacher_pad_id: int | None = None):
    """Right-pad a list of encoded examples.

    Returns a dict of LongTensors ``input_ids`` [B,L], ``attention_mask`` [B,L], ``labels`` [B,L] (IGNORE on
    prompt and padding); with teacher encodings also ``teacher_input_ids``, ``teacher_attention_mask``,
    ``teacher_labels`` [B,T] (padded with ``teacher_pad_id``); ``example_index`` [B] where every example has its
    training-set index.
    """
    out = _pad(batch, pad_id)
    if all(e.index is not None for e in batch):
        out["example_index"] = torch.tensor([e.index for e in batch], dtype=torch.long)
    if batch[0].teacher is not None:
        if teacher_pad_id is None:
            raise ValueError("collate: teacher encodings need teacher_pad_id")
        out.update({f"teacher_{k}": v for k, v in _pad([e.teacher for e in batch], teacher_pad_id).items()})
    if batch[0].teacher_positions is not None:
        positions = torch.full_like(out["labels"], -1)
        for i, e in enumerate(batch):
            positions[i, :len(e.teacher_positions)] = torch.tensor(e.teacher_positions)
        out["teacher_positions"] = positions
    return out


def _pad(batch: list[Encoded], pad_id: int) -> dict:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
