"""Sampling-based generation and Rouge-L evaluation (PAPER.md section 4).

Decoding follows the paper: sampling with temperature 1.0, top_p 1.0, top_k 0, ``no_repeat_ngram_size`` 6 on the
test sets (0 on the dev set), left-padded prompts without BOS, stop at EOS or ``max_new_tokens``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from .data import references
from .io import write_jsonl
from .metrics import mean_std, rouge_l


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    no_repeat_ngram_size: int = 6
    max_prompt_length: int = 256
    batch_size: int = 32


def generate(model, tokenizer, prompts: list[str], seed: int, settings: DecodeSettings,
             desc: str = "generate") -> list[str]:
    """Sample one response per prompt; deterministic in ``seed`` for a given model and batch size.

    Returns the decoded responses (special tokens removed, surrounding whitespace stripped).
    """
    import torch

    if settings.temperature <= 0:
        raise ValueError(f"temperature must be positive for sampling, got {settings.temperature}")
    model.eval()
    outputs: list[str] = []
    pad_id = tokenizer.pad_token_id
    # fork_rng restores the CPU and CUDA generators afterwards, so evaluating between epochs leaves the training
    # randomness (dropout, batch order) as it would be without evaluation.
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), settings.batch_size), desc=desc, leave=False):
            chunk = prompts[start:start + settings.batch_size]
            encoded = [tokenizer(p, add_special_tokens=False)["input_ids"][: settings.max_prompt_length]
                       for p in chunk]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, e in enumerate(encoded):  # left padding: every prompt ends where generation starts
                ids[i, width - len(e):] = torch.tensor(e)
                mask[i, width - len(e):] = 1
            out = model.generate(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device), do_sample=True,
                temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                no_repeat_ngram_size=settings.no_repeat_ngram_size or None, max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
            outputs += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, width:]]
    return outputs


def teacher_targets(model, tokenizer, rows: list[dict], seed: int, settings: DecodeSettings) -> list[dict]:
    """SeqKD data: copies of ``rows`` whose ``output`` is ``model``'s sampled response to the row's prompt.

    The original references are kept under ``reference`` for inspection. Empty responses are kept (the student
    then learns to end at once, as the teacher did), so no example is dropped.
    """
    responses = generate(model, tokenizer, [r["prompt"] for r in rows], seed, settings, desc="teacher targets")
    return [{**row, "output": response, "reference": row["output"]} for row, response in zip(rows, responses)]


def score_rows(rows: list[dict], predictions: list[str]) -> list[float]:
    """Rouge-L of each prediction against its row's references."""
    return [rouge_l(pred, references(row)) for row, pred in zip(rows, predictions, strict=True)]


def evaluate_set(model, tokenizer, rows: list[dict], seeds: list[int], settings: DecodeSettings,
                 out_dir: str | os.PathLike | None = None, name: str = "eval") -> dict:
    """Generate on ``rows`` once per seed and score with Rouge-L.

    Returns ``{"per_seed": {seed: mean Rouge-L}, "mean": ..., "std": ..., "n": len(rows)}``. With ``out_dir``, the
    generations and per-example scores go to ``out_dir/<name>_seed<seed>.jsonl``.
    """
    per_seed = {}
    for seed in seeds:
        preds = generate(model, tokenizer, [r["prompt"] for r in rows], seed, settings, desc=f"{name} seed {seed}")
        scores = score_rows(rows, preds)
        per_seed[seed] = sum(scores) / len(scores)
        if out_dir is not None:
            write_jsonl(Path(out_dir) / f"{name}_seed{seed}.jsonl",
                        [{"prompt": r["prompt"], "instruction": r["instruction"], "input": r["input"],
                          "references": references(r), "prediction": p, "seed": seed, "rougeL": s}
                         for r, p, s in zip(rows, preds, scores)])
    return {"per_seed": per_seed, **mean_std(list(per_seed.values())), "n": len(rows),
            "decoding": asdict(settings)}
