"""Representation distance between a student and its teacher (Figure 3; PAPER.md section 4).

For each example (prompt and output each cut to ``max_chars`` characters), both models read the same text and the
last-layer hidden states (after the final norm) of the response tokens are compared through their token-token
structure, which does not need the two hidden sizes to agree:

- cosine distance: mean over entries of |C_s - C_t|, C = the token-token cosine-similarity matrix;
- inner-product distance: each row of the token-token inner-product matrix divided by its sum, then the L1
  distance between the student's and the teacher's rows, averaged over rows.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .data import references
from .methods import final_hidden
from .models import load_model
from .vocab import load_tokenizer

DISTANCES = ("cosine", "inner_product")


def cosine_distance(student, teacher):
    """Cosine-structure distance of hidden states ``student`` [n, d_s] and ``teacher`` [n, d_t] (same n).

    Returns a 0-d tensor: mean over the n x n entries of |cos_s - cos_t|.
    """
    _check_pair(student, teacher)
    s = F.normalize(student.double(), dim=-1)
    t = F.normalize(teacher.double(), dim=-1)
    return (s @ s.T - t @ t.T).abs().mean()


def inner_product_distance(student, teacher):
    """Inner-product-structure distance of ``student`` [n, d_s] and ``teacher`` [n, d_t] (same n).

    Each row of H H^T is divided by its sum; returns a 0-d tensor: the L1 distance between the student's and the
    teacher's normalised rows, averaged over the n rows.
    """
    _check_pair(student, teacher)
    s = student.double() @ student.double().T
    t = teacher.double() @ teacher.double().T
    s = s / s.sum(dim=-1, keepdim=True)
    t = t / t.sum(dim=-1, keepdim=True)
    return (s - t).abs().sum(dim=-1).mean()


def _check_pair(student, teacher) -> None:
    if student.dim() != 2 or teacher.dim() != 2 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"representation distance needs [n, d_s] and [n, d_t] with the same n, got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")


def example_texts(rows: list[dict], n_examples: int, max_chars: int) -> list[tuple[str, str]]:
    """(prompt, response) of the first ``n_examples`` rows, each cut to ``max_chars`` characters; the response is
    the first reference. Rows with an empty response after cutting raise an error naming the row."""
    texts = []
    for i, row in enumerate(rows[:n_examples]):
        prompt, response = row["prompt"][:max_chars], references(row)[0][:max_chars]
        if not response.strip():
            raise ValueError(f"representation distance: example {i} ({row['instruction'][:60]!r}) has an empty "
                             f"response")
        texts.append((prompt, response))
    return texts


def response_hidden_states(model, tokenizer, texts: list[tuple[str, str]], device: str = "cpu") -> list:
    """Last-layer hidden states [n_i, d] of the response tokens of each (prompt, response) text, one model call per
    example (no padding, so nothing depends on the batch). The prompt and the response are tokenised separately
    and joined (no BOS, PAPER.md section 4), as in training."""
    states = []
    model.eval()
    with torch.no_grad():
        for prompt, response in texts:
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r = tokenizer(response, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + r], device=device)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            states.append(final_hidden(model, batch)[0, len(p):].float().cpu())
    return states


def distances(student_states: list, teacher_states: list) -> dict[str, list[float]]:
    """Both distances for every example; ``*_states``: lists of [n_i, d] tensors in the same order."""
    if len(student_states) != len(teacher_states):
        raise ValueError(f"representation distance: {len(student_states)} student examples but "
                         f"{len(teacher_states)} teacher examples")
    return {"cosine": [float(cosine_distance(s, t)) for s, t in zip(student_states, teacher_states)],
            "inner_product": [float(inner_product_distance(s, t)) for s, t in zip(student_states, teacher_states)]}


def pair_distances(teacher_dir: str | Path, students: dict[str, str | Path], rows: list[dict], n_examples: int,
                   max_chars: int, threads: int = 1) -> dict:
    """Figure 3's values for one same-vocabulary pair.

    ``students``: label (e.g. "SFT", "KD", "DSKD") -> checkpoint directory. Every student must tokenise exactly as
    the teacher does (the token-token matrices compare the same tokens). Returns ``{label: {"cosine": [...],
    "inner_product": [...]}}`` with one value per example.
    """
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # float32 either way: distances of small differences
    texts = example_texts(rows, n_examples, max_chars)
    tokenizer = load_tokenizer(teacher_dir)
    teacher_states = response_hidden_states(load_model(teacher_dir).to(device), tokenizer, texts, device)
    out = {}
    for label, path in students.items():
        student_tokenizer = load_tokenizer(path)
        if student_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"representation distance: student {label} ({path}) and teacher ({teacher_dir}) "
                             f"tokenise differently; Figure 3 compares same-vocabulary pairs only")
        student = load_model(path).to(device)
        out[label] = distances(response_hidden_states(student, tokenizer, texts, device), teacher_states)
        del student
    return out
