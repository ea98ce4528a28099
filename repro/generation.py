"""Sampling-based generation and Rouge-L evaluation (PAPER.md section 4).

Decoding follows the paper: sampling with temperature 1.0, top_p 1.0, top_k 0, ``no_repeat_ngram_size`` 6 on the
test sets (0 on the dev set), left-padded prompts without BOS, stop at EOS or ``max_new_tokens``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from . import layout
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
    if settings.temperature <= 0:
        raise ValueError(f"temperature must be positive for sampling, got {settings.temperature}")
    model.eval()
    outputs: list[str] = []
    # fork_rng restores the CPU and CUDA generators afterwards, so evaluating between epochs leaves the training
    # randomness (dropout, batch order) as it would be without evaluation.
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), settings.batch_size), desc=desc, leave=False):
            ids, mask = left_padded(tokenizer, prompts[start:start + settings.batch_size], settings.max_prompt_length)
            tokens = decode_batch(model, ids.to(model.device), mask.to(model.device), settings,
                                  tokenizer.eos_token_id, sample_token)
            outputs += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in tokens]
    return outputs


def left_padded(tokenizer, prompts: list[str], max_prompt_length: int):
    """``(ids, mask)`` of the prompts, left-padded with the pad id (every prompt ends where generation starts), no
    BOS, each cut to ``max_prompt_length`` tokens."""
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"][:max_prompt_length] for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    return ids, mask


def sample_token(probs):
    """One token per row drawn from ``probs`` [rows, vocab] (the multinomial draw of ``transformers``' sampling)."""
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def last_position(model, ids: torch.Tensor) -> int | torch.Tensor:
    """The ``logits_to_keep`` of a prompt's forward that asks for the logits of its last position alone.

    In bf16, the position as an index tensor: the head then reads a contiguous [batch, 1, hidden] copy of it. The
    integer 1 gives it a strided slice of the hidden states, which ``aten::matmul`` cannot fold into one matrix
    product when the head's weight is frozen (a LoRA model in its dev sampling, SeqKD's teacher): it expands the
    weight to [batch, hidden, rows] and makes that contiguous, a copy of the head per sequence (found with
    ``torch.profiler``; 524 MB for the dev sampling of 4 sequences of the rehearsal's TinyLLaMA LoRA student on a
    CPU). In fp32 (the head's weight fp32 and no autocast) the integer: the miniature's samples were drawn from its
    logits, and the index path's matrix kernel differs in the last bits there (on a CPU in fp32 no copy was seen)."""
    head = model.get_output_embeddings().weight
    if head.dtype != torch.float32 or torch.is_autocast_enabled(ids.device.type):
        return torch.tensor([ids.shape[1] - 1], device=ids.device)
    return 1


def decode_batch(model, ids, mask, settings: DecodeSettings, eos_id: int, pick) -> list[list[int]]:
    """The new tokens of every row of the left-padded batch ``ids``/``mask`` (EOS included where drawn).

    The decoding of ``transformers``' ``generate(do_sample=True)``: the same logits processors in the same order
    (no-repeat n-grams over prompt and response, then temperature, top-k, top-p), float32 probabilities, a KV cache,
    stop at EOS or ``max_new_tokens``. One difference, for speed: a row that has drawn EOS leaves the batch (its
    cache rows are dropped), where ``generate`` keeps computing it to the end. With one prompt per batch the draws
    are those of ``generate`` token for token (tested); with more, each row's distribution is the same but the random
    stream is shared by fewer rows after the first EOS, so the samples differ from ``generate``'s."""
    processors = LogitsProcessorList()
    if settings.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if settings.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        processors.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1.0:
        processors.append(TopPLogitsWarper(settings.top_p))
    new: list[list[int]] = [[] for _ in range(len(ids))]
    if settings.max_new_tokens <= 0:
        return new
    rows = torch.arange(len(ids))   # which original row each batch row is
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                cache=cache, use_cache=True, logits_to_keep=last_position(model, ids))
    seqs = ids
    for step in range(settings.max_new_tokens):
        scores = processors(seqs, out.logits[:, -1, :].float())
        token = pick(scores.softmax(-1))
        for row, t in zip(rows.tolist(), token.tolist(), strict=True):
            new[row].append(t)
        if step + 1 == settings.max_new_tokens:
            break
        seqs = torch.cat([seqs, token[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(len(token), 1)], dim=1)
        going = token != eos_id
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            if len(keep) == 0:
                break
            rows, seqs, mask, token = rows[keep.cpu()], seqs[keep], mask[keep], token[keep]
            cache.batch_select_indices(keep)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    cache=cache, use_cache=True)
    return new


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
            write_jsonl(Path(out_dir) / layout.generation_name(name, seed),
                        [{"prompt": r["prompt"], "instruction": r["instruction"], "input": r["input"],
                          "references": references(r), "prediction": p, "seed": seed, "rougeL": s}
                         for r, p, s in zip(rows, preds, scores)])
    return {"per_seed": per_seed, **mean_std(list(per_seed.values())), "n": len(rows),
            "decoding": asdict(settings)}
