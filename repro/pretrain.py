"""Next-token pretraining of a miniature base model on the corpus of other seeded worlds
(``repro.synthetic.pretraining_corpus``), so that every student and teacher row starts from a pretrained model, as in
the paper (PAPER.md section 3: KD starts from the pretrained student).

Every token of a text is a target (the loss is the mean token cross-entropy), AdamW with the project's weight decay,
a cosine decay to ``min_lr`` without warmup and gradient clipping, batches drawn in a seeded order; the final
weights are kept (no checkpoint choice: the corpus has no dev set of the task). Deterministic in ``seed``.

    python -m repro.pretrain --model BASE_DIR --corpus CORPUS.jsonl --out OUT_DIR --settings '{"epochs": 2, ...}'
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .data import IGNORE
from .io import atomic_path, read_jsonl, write_json
from .models import load_model
from .settings import PretrainSettings
from .training import param_groups
from .vocab import load_tokenizer


def encode_texts(texts: list[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids of every text followed by EOS, cut to ``max_length + 1`` (inputs and shifted targets)."""
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) < 2:
            raise ValueError(f"pretraining text {i}: no token to predict ({text[:60]!r})")
        out.append(ids[: max_length + 1])
    return out


def pretrain(model, tokenizer, texts: list[str], settings: PretrainSettings, log_every: int = 20) -> dict:
    """Train ``model`` in place by next-token prediction on ``texts``; return a summary with the loss per logged
    step (mean over the steps since the last one), the tokens seen and the seconds taken."""
    torch.manual_seed(settings.seed)
    encoded = encode_texts(texts, tokenizer, settings.max_length)
    optimizer = torch.optim.AdamW(param_groups(model, None, settings), lr=settings.lr)  # the training loop's groups
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    order_rng = torch.Generator().manual_seed(settings.seed)
    pad = tokenizer.pad_token_id
    model.train()
    step, tokens, losses, log = 0, 0, [], []
    started = time.perf_counter()
    for _ in range(settings.epochs):
        order = torch.randperm(len(encoded), generator=order_rng).tolist()
        for start in range(0, len(order), settings.batch_size):
            batch = [encoded[i] for i in order[start:start + settings.batch_size]]
            width = max(len(ids) for ids in batch) - 1
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):
                n = len(seq) - 1
                ids[row, :n], labels[row, :n], mask[row, :n] = torch.tensor(seq[:-1]), torch.tensor(seq[1:]), 1
            lr = settings.min_lr + 0.5 * (settings.lr - settings.min_lr) * (1 + math.cos(math.pi * step / total))
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                     ignore_index=IGNORE)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretraining: non-finite loss {loss.item()} at step {step}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += int(mask.sum())
            losses.append(loss.item())
            if step % log_every == 0 or step == total:
                log.append({"step": step, "loss": sum(losses) / len(losses), "lr": lr})
                losses = []
    model.eval()
    return {"settings": asdict(settings), "texts": len(encoded), "steps": step, "tokens": tokens,
            "seconds": time.perf_counter() - started, "log": log, "final_loss": log[-1]["loss"] if log else None}


def pretrain_base(model_dir: str | os.PathLike, corpus_file: str | os.PathLike, out_dir: str | os.PathLike,
                  settings: PretrainSettings, threads: int = 1, log_every: int = 20) -> dict:
    """Load the base model saved in ``model_dir`` (with its tokenizer), pretrain it on the corpus file's texts,
    save it with its tokenizer to ``out_dir`` (atomically) and the summary to ``out_dir/pretrain_summary.json``."""
    torch.set_num_threads(threads)
    rows = read_jsonl(corpus_file)
    texts = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row.get("text"), str) or not row["text"]:
            raise ValueError(f"{corpus_file}, line {i}: expected a non-empty string under 'text'")
        texts.append(row["text"])
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    summary = pretrain(model, tokenizer, texts, settings, log_every)
    summary.update({"model": str(model_dir), "corpus": str(corpus_file)})
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(Path(tmp) / "pretrain_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="base model folder (save_pretrained, with its tokenizer)")
    parser.add_argument("--corpus", required=True, help="JSONL with a 'text' per line")
    parser.add_argument("--out", required=True, help="folder for the pretrained model")
    parser.add_argument("--settings", default="{}", help="PretrainSettings fields as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    summary = pretrain_base(args.model, args.corpus, args.out, PretrainSettings(**json.loads(args.settings)),
                            args.threads)
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}))


if __name__ == "__main__":
    main()
