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
``align_examples`` applies the DTW to every example of a training set as the official code does (the input tokens
at response positions, a pair kept only where the ids agree through the map) or to its labels, batched: the
dynamic programme runs row by row for many examples at once in numpy, with exactly the official values and
tie-breaking (``tests/plain.py`` keeps the cell-by-cell reference; ``scripts/benchmark_mined.py`` times both);
``align_positions`` is the same for one example. ``first_teacher_ids`` gives, for every student id, the teacher id
whose logit the official target takes.

rapidfuzz runs on the job's threads (``torch.get_num_threads()``, or ``workers``), never on all the node's cores.
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


def _threads(workers: int | None) -> int:
    """rapidfuzz's thread count: ``workers``, or the job's own (``torch.get_num_threads()``, which the jobs set to
    their thread count) when None; never all of the node's cores."""
    workers = torch.get_num_threads() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"rapidfuzz workers must be a positive thread count, got {workers!r}")
    return workers


def _distances(queries: list[str], choices: list[str], workers: int) -> np.ndarray:
    """Edit distances [len(queries), len(choices)] (int32) on ``workers`` threads."""
    return process.cdist(queries, choices, scorer=Levenshtein.distance, dtype=np.int32, workers=workers)


def _cache_file(teacher_tokenizer, student_tokenizer, marks: str) -> Path:
    digest = hashlib.sha256(marks.encode())
    for tok in (teacher_tokenizer, student_tokenizer):
        digest.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    root = Path(os.environ.get("REPRO_CACHE", Path.home() / ".cache" / "repro"))
    return root / "vocab_maps" / f"{digest.hexdigest()[:24]}.npy"


def vocab_mapping(teacher_tokenizer, student_tokenizer, teacher_ids: list[int] | None = None,
                  chunk: int = 2048, cache: bool = True, marks: str = "convert",
                  workers: int | None = None) -> np.ndarray:
    """Map teacher ids to student ids by minimum edit distance between token strings (``mapping_strings``:
    ``marks`` ``"convert"``, FuseLLM's, or ``"strip"``).

    Returns an int64 array of length ``len(teacher_tokenizer)`` (or of ``len(teacher_ids)`` for a subset, which is
    computed directly and not cached). The full map is cached in ``$REPRO_CACHE`` (default ``~/.cache/repro``)
    under a hash of both vocabularies, because for real vocabularies (150k x 50k) it takes minutes. The edit
    distances run on ``workers`` threads (default: the job's, ``torch.get_num_threads()``).
    """
    workers = _threads(workers)
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
        mapping[part] = _distances([t_strings[ids[k]] for k in part], s_strings, workers).argmin(axis=1)
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


# Beyond the cost of any warping path (paths have at most n + m steps, each costing at most the longer string's
# length): the DP's infinity, in integers so that every accumulated cost is exact, as the official float costs
# (small integers) are. int32 where the batch's bound allows it, else int64.
_FAR = np.int64(1) << 40
_FAR_32 = np.int32(1) << 30
# Cells (B x (N+1) x (M+1)) of one batch of the batched DTW: its three arrays then take about 24 MB (int32).
BATCH_CELLS = 1 << 21


def pair_costs(student_tokens: list[str], teacher_tokens: list[str]) -> np.ndarray:
    """The DTW's cost matrix [n, m] (int32): the edit distance between every student and teacher token string.
    Each distinct pair of strings is measured once (tokens repeat within an example), on one thread: the matrices
    are small, and a thread pool per example would cost more than it saves."""
    s_index, t_index = {}, {}
    s_rows = [s_index.setdefault(tok, len(s_index)) for tok in student_tokens]
    t_cols = [t_index.setdefault(tok, len(t_index)) for tok in teacher_tokens]
    distinct = _distances(list(s_index), list(t_index), workers=1)
    return distinct[s_rows][:, t_cols]


def _warp_batch(costs: list[np.ndarray]) -> list[list[int]]:
    """The DTW of several sequence pairs at once, each cost matrix ``costs[b]`` [n_b, m_b] (n_b, m_b >= 1) padded
    into one array [N, B, M] (N, M: the largest n_b, m_b); returns for every pair the one-to-one teacher position of
    each student position, else -1 (``dtw_align``).

    Row ``i`` of the accumulated cost ``acc[i, j] = c[i, j] + min(acc[i-1, j-1], acc[i-1, j], acc[i, j-1])`` is a
    running minimum: with ``a[j] = min(acc[i-1, j-1], acc[i-1, j])`` and row prefix sums ``C[j] = c[i, 1] + ...
    + c[i, j]``, ``acc[i, j] = C[j] + min over k <= j of (a[k] - C[k-1])``, one ``np.minimum.accumulate`` per row
    for the whole batch, in integers and so exactly the official values. Padding lies after every real cell of a
    pair, which never reads it. The backtrack steps every pair at once with the official tie order (diagonal,
    then (i-1, j), then (i, j-1)).
    """
    n = np.array([c.shape[0] for c in costs])
    m = np.array([c.shape[1] for c in costs])
    batch, rows, cols = len(costs), int(n.max()), int(m.max())
    # int32 halves the memory traffic where no path's cost can come near the infinity; the values are the same
    far_32 = (rows + cols) * max(int(c.max()) for c in costs) < _FAR_32 // 2
    dtype, far = (np.int32, _FAR_32) if far_32 else (np.int64, _FAR)
    cost = np.zeros((rows, batch, cols), dtype=dtype)  # row-major over the DP's rows: each step reads contiguously
    for b, c in enumerate(costs):
        cost[:c.shape[0], b, :c.shape[1]] = c
    prefix = np.cumsum(cost, axis=2, dtype=dtype)  # C[j]
    before = np.subtract(prefix, cost, out=cost)  # C[j-1]; the costs themselves are not read again
    acc = np.empty((rows + 1, batch, cols + 1), dtype=dtype)
    acc[0] = far
    acc[:, :, 0] = far
    acc[0, :, 0] = 0
    run = np.empty((batch, cols), dtype=dtype)
    for i in range(1, rows + 1):
        above = acc[i - 1]
        np.minimum(above[:, :-1], above[:, 1:], out=run)
        run -= before[i - 1]
        np.minimum.accumulate(run, axis=1, out=run)
        np.add(run, prefix[i - 1], out=acc[i, :, 1:])
    i, j = n.copy(), m.copy()
    active = np.arange(batch)
    path_b, path_i, path_j = [], [], []
    while active.size:
        ai, aj = i[active], j[active]
        path_b.append(active)
        path_i.append(ai - 1)
        path_j.append(aj - 1)
        diag, up, left = acc[ai - 1, active, aj - 1], acc[ai - 1, active, aj], acc[ai, active, aj - 1]
        take_diag = (diag <= up) & (diag <= left)
        take_up = ~take_diag & (up <= left)
        ai = ai - (take_diag | take_up)
        aj = aj - ~take_up
        i[active], j[active] = ai, aj
        active = active[(ai > 0) & (aj > 0)]
    pb, pi, pj = np.concatenate(path_b), np.concatenate(path_i), np.concatenate(path_j)
    s_count = np.bincount(pb * rows + pi, minlength=batch * rows)
    t_count = np.bincount(pb * cols + pj, minlength=batch * cols)
    one = (s_count[pb * rows + pi] == 1) & (t_count[pb * cols + pj] == 1)
    out = np.full((batch, rows), -1, dtype=np.int64)
    out[pb[one], pi[one]] = pj[one]
    return [out[b, :n[b]].tolist() for b in range(batch)]


def _batches(sizes: list[tuple[int, int]], cells: int) -> list[list[int]]:
    """Indices of the pairs with sizes ``(n, m)`` (both >= 1), grouped by size so that padding stays small, each
    group within ``cells`` cells of the padded DP (a single larger pair alone)."""
    groups, group, rows, cols = [], [], 0, 0
    for k in sorted(range(len(sizes)), key=lambda k: sizes[k]):
        n, m = sizes[k]
        if group and (len(group) + 1) * (max(rows, n) + 1) * (max(cols, m) + 1) > cells:
            groups.append(group)
            group, rows, cols = [], 0, 0
        group.append(k)
        rows, cols = max(rows, n), max(cols, m)
    return groups + [group] if group else groups


def dtw_align(student_tokens: list[str], teacher_tokens: list[str]) -> list[int]:
    """Align two token-string sequences by dynamic time warping with edit-distance costs (PAPER.md section 2,
    MinED).

    Returns, for every student position, the teacher position it is aligned to one-to-one, else -1. The warping
    path moves by (1,1), (1,0) or (0,1) steps from (0,0) to the two ends; the backtrack prefers the diagonal, then
    (1,0), on ties (the official code's order). The plain cell-by-cell computation is ``tests/plain.py``'s
    ``dtw_align``, which this equals.
    """
    if not student_tokens or not teacher_tokens:
        return [-1] * len(student_tokens)
    return _warp_batch([pair_costs(student_tokens, teacher_tokens)])[0]


ALIGNED_TOKENS = ("input", "label")


def align_examples(examples: list[tuple[list[int], list[int], list[int], list[int]]], s_strings: list[str],
                   t_strings: list[str], vocab_map, tokens: str = "input",
                   batch_cells: int = BATCH_CELLS) -> list[list[int]]:
    """For every student position of every example, the teacher position aligned to it one-to-one, else -1
    (PAPER.md section 2, MinED). ``examples``: ``(s_input, s_labels, t_input, t_labels)`` per example, the
    student's and the teacher's tokenisation of it (input ids and labels [L] and [T], -100 off the response).

    Only response positions (label not -100) take part on either side. ``tokens``:
    - ``"input"`` (the official code): the DTW aligns the INPUT tokens at the response positions (position ``i``'s
      input token, whose next-token distribution is compared), and a one-to-one pair ``(i, j)`` is kept only where
      ``vocab_map[t_input[j]] == s_input[i]``;
    - ``"label"``: the DTW aligns the label tokens (the next tokens), every one-to-one pair is kept.
    ``s_strings``/``t_strings``: normalised token strings by id (``token_strings``); ``vocab_map``: teacher id ->
    student id (``vocab_mapping``, or a dict over the ids used), read only with ``"input"``. The DTWs run batched
    (``_warp_batch``), ``batch_cells`` cells at a time; the result is the example-by-example one.
    """
    if tokens not in ALIGNED_TOKENS:
        raise ValueError(f"MinED alignment tokens must be one of {ALIGNED_TOKENS}, got {tokens!r}")
    if tokens == "input" and not isinstance(vocab_map, dict):
        vocab_map = np.asarray(vocab_map)
    sides = []  # per example: (student positions, student token ids, teacher positions, teacher token ids)
    for s_input, s_labels, t_input, t_labels in examples:
        s_pos = np.flatnonzero(np.asarray(s_labels) != -100)
        t_pos = np.flatnonzero(np.asarray(t_labels) != -100)
        s_tok, t_tok = (s_input, t_input) if tokens == "input" else (s_labels, t_labels)
        sides.append((s_pos, np.asarray(s_tok, dtype=np.int64)[s_pos], t_pos, np.asarray(t_tok, dtype=np.int64)[t_pos]))
    out = [[-1] * len(example[1]) for example in examples]
    todo = [k for k, (s_pos, _, t_pos, _) in enumerate(sides) if len(s_pos) and len(t_pos)]
    for group in _batches([(len(sides[k][0]), len(sides[k][2])) for k in todo], batch_cells):
        ks = [todo[g] for g in group]
        costs = [pair_costs([s_strings[t] for t in sides[k][1]], [t_strings[t] for t in sides[k][3]]) for k in ks]
        for k, pairs in zip(ks, _warp_batch(costs)):
            s_pos, s_ids, t_pos, t_ids = sides[k]
            pairs = np.asarray(pairs)
            kept = np.flatnonzero(pairs >= 0)
            to = pairs[kept]
            if tokens == "input":
                mapped = (np.array([vocab_map[t] for t in t_ids[to].tolist()], dtype=np.int64)
                          if isinstance(vocab_map, dict) else vocab_map[t_ids[to]])
                same = mapped == s_ids[kept]
                kept, to = kept[same], to[same]
            row = np.full(len(out[k]), -1, dtype=np.int64)
            row[s_pos[kept]] = t_pos[to]
            out[k] = row.tolist()
    return out


def align_positions(s_input: list[int], s_labels: list[int], t_input: list[int], t_labels: list[int],
                    s_strings: list[str], t_strings: list[str], vocab_map, tokens: str = "input") -> list[int]:
    """``align_examples`` for one example: for every student position, the teacher position aligned to it
    one-to-one, else -1 (PAPER.md section 2, MinED)."""
    return align_examples([(s_input, s_labels, t_input, t_labels)], s_strings, t_strings, vocab_map, tokens)[0]


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
