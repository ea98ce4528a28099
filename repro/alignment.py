"""Token alignment between two tokenizers, for MinED (FuseLLM's minimum-edit-distance alignment; PAPER.md
section 2).

Two pieces, both by edit distance between token strings:
- ``vocab_mapping``: every teacher token id -> a student id (FuseLLM's ``vocab_mapping``). ``marks="convert"`` (the
  official behaviour): the teacher token's space mark (``Ġ`` of byte-level BPE, ``▁`` of sentencepiece) is replaced
  by the student's, then the student token with exactly that string, else the one at minimum edit distance; so a
  token with a leading space maps to a token with a leading space. ``marks="strip"``: both sides without any space
  mark (a word with and without its leading space then fall together). Ties go to the lowest student id; special
  tokens map to their counterparts. Cached on disk per tokenizer pair and convention.
- ``dtw_align``: dynamic time warping between two token sequences (edit distance between the strings after
  stripping both space marks), returning for every student position the teacher position it is aligned to
  one-to-one, or -1 (unaligned, or part of a one-to-many group).
``align_positions`` applies the DTW to one example as the official code does (the input tokens at response positions,
a pair kept only where the ids agree through the map) or to its labels; ``first_teacher_ids`` gives, for every
student id, the teacher id whose logit the official target takes.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from .io import atomic_path

SPACE_MARKS = ("Ġ", "▁")
MARK_CONVENTIONS = ("convert", "strip")


def normalize(token: str) -> str:
    """A token string without the space marks of byte-level BPE and sentencepiece."""
    for mark in SPACE_MARKS:
        token = token.replace(mark, "")
    return token


def token_strings(tokenizer, n_vocab: int | None = None) -> list[str]:
    """Normalised strings of ids ``0 .. n_vocab-1`` (default: every id of the tokenizer)."""
    n = len(tokenizer) if n_vocab is None else n_vocab
    return [normalize(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(n)))]


def space_mark(tokenizer) -> str | None:
    """The space mark of ``tokenizer``'s vocabulary: the mark of ``SPACE_MARKS`` that most token strings start
    with (``Ġ`` for byte-level BPE, ``▁`` for sentencepiece), or None when no token starts with either."""
    tokens = [t or "" for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    counts = {mark: sum(t.startswith(mark) for t in tokens) for mark in SPACE_MARKS}
    mark = max(counts, key=counts.get)
    return mark if counts[mark] else None


def mapping_strings(teacher_tokenizer, student_tokenizer, marks: str) -> tuple[list[str], list[str]]:
    """The token strings ``vocab_mapping`` compares, by id: (teacher, student). ``"convert"``: raw student strings
    and teacher strings with the teacher's space mark replaced by the student's; ``"strip"``: both ``normalize``d."""
    if marks not in MARK_CONVENTIONS:
        raise ValueError(f"vocabulary map convention must be one of {MARK_CONVENTIONS}, got {marks!r}")
    if marks == "strip":
        return token_strings(teacher_tokenizer), token_strings(student_tokenizer)
    t_mark, s_mark = space_mark(teacher_tokenizer), space_mark(student_tokenizer)
    raw = [[t or "" for t in tok.convert_ids_to_tokens(list(range(len(tok))))]
           for tok in (teacher_tokenizer, student_tokenizer)]
    if t_mark is not None and s_mark is not None and t_mark != s_mark:
        raw[0] = [t.replace(t_mark, s_mark) for t in raw[0]]
    return raw[0], raw[1]


def _distances(queries: list[str], choices: list[str]) -> np.ndarray:
    return process.cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32, workers=-1)


def _cache_file(teacher_tokenizer, student_tokenizer, marks: str) -> Path:
    digest = hashlib.sha256(marks.encode())
    for tok in (teacher_tokenizer, student_tokenizer):
        digest.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    root = Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro"))
    return root / "vocab_maps" / f"{digest.hexdigest()[:24]}.npy"


def vocab_mapping(teacher_tokenizer, student_tokenizer, teacher_ids: list[int] | None = None,
                  chunk: int = 2048, cache: bool = True, marks: str = "convert") -> np.ndarray:
    """Map teacher ids to student ids by minimum edit distance between token strings (``mapping_strings``:
    ``marks`` ``"convert"``, FuseLLM's, or ``"strip"``).

    Returns an int64 array of length ``len(teacher_tokenizer)`` (or of ``len(teacher_ids)`` for a subset, which is
    computed directly and not cached). The full map is cached in ``$REPRO_CACHE`` (default ``~/.cache/repro``)
    under a hash of both vocabularies, because for real vocabularies (150k x 50k) it takes minutes.
    """
    full = teacher_ids is None
    path = _cache_file(teacher_tokenizer, student_tokenizer, marks) if full and cache else None
    if path is not None and path.exists():
        return np.load(path)
    t_strings, s_strings = mapping_strings(teacher_tokenizer, student_tokenizer, marks)
    ids = list(range(len(t_strings))) if full else list(teacher_ids)
    exact = {}
    for sid, s in enumerate(s_strings):
        exact.setdefault(s, sid)
    mapping = np.full(len(ids), -1, dtype=np.int64)
    todo = []
    for k, tid in enumerate(ids):
        if t_strings[tid] in exact:
            mapping[k] = exact[t_strings[tid]]
        else:
            todo.append(k)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        mapping[part] = _distances([t_strings[ids[k]] for k in part], s_strings).argmin(axis=1)
    specials = {"eos_token_id", "bos_token_id", "unk_token_id", "pad_token_id"}
    for name in specials:
        tid, sid = getattr(teacher_tokenizer, name), getattr(student_tokenizer, name)
        if tid is not None and sid is not None and tid in ids:
            mapping[ids.index(tid)] = sid
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, mapping)
    return mapping


def dtw_align(student_tokens: list[str], teacher_tokens: list[str]) -> list[int]:
    """Align two token-string sequences by dynamic time warping with edit-distance costs.

    Returns, for every student position, the teacher position it is aligned to one-to-one, else -1. The warping
    path moves by (1,1), (1,0) or (0,1) steps from (0,0) to the two ends; ties prefer the diagonal.
    """
    n, m = len(student_tokens), len(teacher_tokens)
    if n == 0 or m == 0:
        return [-1] * n
    cost = _distances(student_tokens, teacher_tokens).astype(np.float64)
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    path = []
    i, j = n, m
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        steps = [(acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1)]
        _, i, j = min(steps, key=lambda s: s[0])  # min keeps the first (diagonal) on ties
    path.reverse()
    s_count = np.bincount([p[0] for p in path], minlength=n)
    t_count = np.bincount([p[1] for p in path], minlength=m)
    out = [-1] * n
    for si, ti in path:
        if s_count[si] == 1 and t_count[ti] == 1:
            out[si] = ti
    return out


ALIGNED_TOKENS = ("input", "label")


def align_positions(s_input: list[int], s_labels: list[int], t_input: list[int], t_labels: list[int],
                    s_strings: list[str], t_strings: list[str], vocab_map, tokens: str = "input") -> list[int]:
    """For every student position of one example, the teacher position aligned to it one-to-one, else -1
    (PAPER.md section 2, MinED).

    Only response positions (label not -100) take part on either side. ``tokens``:
    - ``"input"`` (the official code): the DTW aligns the INPUT tokens at the response positions (position ``i``'s
      input token, whose next-token distribution is compared), and a one-to-one pair ``(i, j)`` is kept only where
      ``vocab_map[t_input[j]] == s_input[i]``;
    - ``"label"``: the DTW aligns the label tokens (the next tokens), every one-to-one pair is kept.
    ``s_strings``/``t_strings``: normalised token strings by id (``token_strings``); ``vocab_map``: teacher id ->
    student id (``vocab_mapping``), read only with ``"input"``.
    """
    if tokens not in ALIGNED_TOKENS:
        raise ValueError(f"MinED alignment tokens must be one of {ALIGNED_TOKENS}, got {tokens!r}")
    s_pos = [i for i, label in enumerate(s_labels) if label != -100]
    t_pos = [j for j, label in enumerate(t_labels) if label != -100]
    s_tok, t_tok = (s_input, t_input) if tokens == "input" else (s_labels, t_labels)
    pairs = dtw_align([s_strings[s_tok[i]] for i in s_pos], [t_strings[t_tok[j]] for j in t_pos])
    out = [-1] * len(s_labels)
    for i, k in zip(s_pos, pairs):
        if k < 0:
            continue
        j = t_pos[k]
        if tokens == "label" or int(vocab_map[t_tok[j]]) == s_tok[i]:
            out[i] = j
    return out


def first_teacher_ids(vocab_map, n_student: int):
    """For every student id, the lowest teacher id that ``vocab_map`` [V_t] sends to it, else -1: a LongTensor
    [n_student]. The official MinED target gives each student id the logit of this ONE teacher id (its
    ``max_align_num = 1``; PAPER.md section 2)."""
    vocab_map = torch.as_tensor(vocab_map, dtype=torch.long)
    if len(vocab_map) and (vocab_map.min() < 0 or vocab_map.max() >= n_student):
        raise ValueError(f"vocabulary map sends teacher ids outside the student's {n_student} ids")
    n_teacher = len(vocab_map)
    first = torch.full((n_student,), n_teacher, dtype=torch.long)
    first = first.scatter_reduce(0, vocab_map.cpu(), torch.arange(n_teacher), reduce="amin")
    return first.masked_fill(first == n_teacher, -1).to(vocab_map.device)
