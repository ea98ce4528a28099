"""Plain reference computations the tests compare the project's lean ones with (full-length tensors, masks)."""
import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from repro.data import IGNORE


def masked_sum(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum ``values`` [B,L] over the positions whose label [B,L] is not IGNORE (prompt and padding excluded),
    selected out rather than multiplied by zero, so that a NaN or inf there cannot leak in."""
    return values[labels != IGNORE].sum()


def forward_with_hidden(model, batch: dict, n_vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [B,L,n_vocab] of the whole model and the last hidden states [B,L,d] exactly as its output head
    receives them (a forward pre-hook on ``get_output_embeddings()``: after the final norm, for any architecture)."""
    captured = {}

    def grab(_module, args):
        captured["hidden"] = args[0]

    handle = model.get_output_embeddings().register_forward_pre_hook(grab)
    try:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[..., :n_vocab]
    finally:
        handle.remove()
    return logits, captured["hidden"]


def dtw_align(student_tokens: list[str], teacher_tokens: list[str], workers: int = 1) -> list[int]:
    """MinED's DTW as the official code runs it (PAPER.md section 2), cell by cell: the reference for
    ``repro.alignment.dtw_align``. For every student position, the teacher position it is aligned to one-to-one, else
    -1; the path moves by (1,1), (1,0) or (0,1) steps, and the backtrack prefers the diagonal, then (1,0), on ties.
    ``workers``: rapidfuzz's threads for the cost matrix (-1, every core, was the project's before the batched DTW;
    ``scripts/benchmark_mined.py --old-workers``)."""
    n, m = len(student_tokens), len(teacher_tokens)
    if n == 0 or m == 0:
        return [-1] * n
    cost = process.cdist(student_tokens, teacher_tokens, scorer=Levenshtein.distance, dtype=np.int32,
                         workers=workers).astype(np.float64)
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


def align_positions(s_input: list[int], s_labels: list[int], t_input: list[int], t_labels: list[int],
                    s_strings: list[str], t_strings: list[str], vocab_map, tokens: str = "input",
                    workers: int = 1) -> list[int]:
    """One example's MinED alignment, position by position with the plain ``dtw_align`` (on ``workers``): the
    reference for ``repro.alignment.align_examples`` (same arguments as ``repro.alignment.align_positions``)."""
    s_pos = [i for i, label in enumerate(s_labels) if label != IGNORE]
    t_pos = [j for j, label in enumerate(t_labels) if label != IGNORE]
    s_tok, t_tok = (s_input, t_input) if tokens == "input" else (s_labels, t_labels)
    pairs = dtw_align([s_strings[s_tok[i]] for i in s_pos], [t_strings[t_tok[j]] for j in t_pos], workers)
    out = [-1] * len(s_labels)
    for i, k in zip(s_pos, pairs):
        if k < 0:
            continue
        j = t_pos[k]
        if tokens == "label" or int(vocab_map[t_tok[j]]) == s_tok[i]:
            out[i] = j
    return out
