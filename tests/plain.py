"""Plain reference computations the tests compare the project's lean ones with (full-length tensors, masks)."""
import torch

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
