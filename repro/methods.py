"""Training objectives of the table rows, one registry keyed by the labels the tables print (PAPER.md section 2).

A method turns a batch into token-SUMMED loss terms; the trainer divides them by the number of response tokens of
the whole global batch (the official normalisation). ``loss`` is the term that is back-propagated; the other
entries are logged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .losses import cross_entropy_sum, get_divergence, masked_sum


@dataclass
class Context:
    """What a method needs besides the batch.

    ``n_vocab``: number of real token ids; logits beyond it (padded embedding rows, as in Qwen1.5) are cut off.
    """
    n_vocab: int
    kd_rate: float = 0.5
    temperature: float = 2.0
    divergence: str | None = None
    teacher: torch.nn.Module | None = None


def _logits(model, batch: dict, n_vocab: int) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits[..., :n_vocab]


class SFT:
    """Supervised fine-tuning: token cross-entropy on the response (the "SFT" rows and the teacher row)."""
    needs_teacher = False
    needs_divergence = False

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        ce = cross_entropy_sum(_logits(student, batch, ctx.n_vocab), batch["labels"])
        return {"loss": ce, "ce": ce.detach()}


class VanillaKD:
    """Vanilla white-box KD (the "KD" rows): ``(1 - a) CE + a * sum_m D(z_s, z_t)``, teacher detached."""
    needs_teacher = True
    needs_divergence = True

    def loss(self, student, batch: dict, ctx: Context) -> dict[str, torch.Tensor]:
        if ctx.teacher is None:
            raise ValueError("method 'kd' needs a teacher model")
        divergence = get_divergence(ctx.divergence)
        z_s = _logits(student, batch, ctx.n_vocab)
        with torch.no_grad():
            z_t = _logits(ctx.teacher, batch, ctx.n_vocab)
        ce = cross_entropy_sum(z_s, batch["labels"])
        kd = masked_sum(divergence(z_s, z_t, ctx.temperature), batch["labels"])
        loss = (1 - ctx.kd_rate) * ce + ctx.kd_rate * kd
        return {"loss": loss, "ce": ce.detach(), "kd": kd.detach()}


METHODS = {
    "sft": SFT(),
    "kd": VanillaKD(),
}


def get_method(name: str):
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {sorted(METHODS)}") from None
