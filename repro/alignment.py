"""Token alignment between two tokenizers, for MinED (FuseLLM's minimum-edit-distance alignment; PAPER.md
section 2).

Two pieces, both by edit distance between token strings after stripping the byte-level space mark ``Ġ`` and the
sentencepiece space mark ``▁``:
- ``vocab_mapping``: every teacher token id -> the student id whose string is closest (exact matches first; ties
  go to the lowest student id); special tokens map to their counterparts. Cached on disk per tokenizer pair.
- ``dtw_align``: dynamic time warping between two token sequences, returning for every student position the
  teacher position it is aligned to one-to-one, or -1 (unaligned, or part of a one-to-many group).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

SPACE_MARKS = ("Ġ", "▁")


def normalize(token: str) -> str:
    """A token string without the space marks of byte-level BPE and sentencepiece."""
    for mark in SPACE_MARKS:
        token = token.replace(mark, "")
    return token


def token_strings(tokenizer, n_vocab: int | None = None) -> list[str]:
    """Normalised strings of ids ``0 .. n_vocab-1`` (default: every id of the tokenizer)."""
    n = len(tokenizer) if n_vocab is None else n_vocab
    return [normalize(t or "") for t in tokenizer.convert_ids_to_tokens(list(range(n)))]


def _distances(queries: list[str], choices: list[str]) -> np.ndarray:
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    return process.cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32, workers=-1)


def _cache_file(teacher_tokenizer, student_tokenizer) -> Path:
    digest = hashlib.sha256()
    for tok in (teacher_tokenizer, student_tokenizer):
        digest.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    root = Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro"))
    return root / "vocab_maps" / f"{digest.hexdigest()[:24]}.npy"


def vocab_mapping(teacher_tokenizer, student_tokenizer, teacher_ids: list[int] | None = None,
                  chunk: int = 2048, cache: bool = True) -> np.ndarray:
    """Map teacher ids to student ids by minimum edit distance between normalised token strings.

    Returns an int64 array of length ``len(teacher_tokenizer)`` (or of ``len(teacher_ids)`` for a subset, which is
    computed directly and not cached). The full map is cached in ``$REPRO_CACHE`` (default ``~/.cache/repro``)
    under a hash of both vocabularies, because for real vocabularies (150k x 50k) it takes minutes.
    """
    from .io import atomic_path

    full = teacher_ids is None
    path = _cache_file(teacher_tokenizer, student_tokenizer) if full and cache else None
    if path is not None and path.exists():
        return np.load(path)
    t_strings = token_strings(teacher_tokenizer)
    s_strings = token_strings(student_tokenizer)
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
