"""The training loop shared by every method (PAPER.md section 3).

AdamW (weight decay 0.01), cosine decay from the peak learning rate to ``min_lr`` with no warmup, gradient clipping
at 1.0, a fixed global batch reached by gradient accumulation, loss terms normalised by the response tokens of the
global batch. After every epoch the model samples on the dev set and the checkpoint with the best dev Rouge-L is
kept (saved with ``save_pretrained``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import layout
from .data import IGNORE, collate, encode_dataset
from .generation import DecodeSettings, evaluate_set
from .io import atomic_path, write_jsonl
from .methods import CHOICES, Context


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int = 32
    micro_batch_size: int = 32
    weight_decay: float = 0.01
    min_lr: float = 1e-7
    clip: float = 1.0
    max_length: int = 512
    max_prompt_length: int = 256
    seed: int = 10
    kd_rate: float = 0.5
    temperature: float = 2.0
    projector_lr: float = 1e-3
    checkpoint_every: int = 0
    # Where the official code and another choice differ (README "Fidelity"; defaults: repro.methods.CHOICES):
    dskd_s2t_divergence: str = CHOICES["dskd_s2t_divergence"][0]
    cma_normalisation: str = CHOICES["cma_normalisation"][0]
    mined_alignment: str = CHOICES["mined_alignment"][0]
    mined_target: str = CHOICES["mined_target"][0]
    mined_vocab_map: str = CHOICES["mined_vocab_map"][0]
    teacher_padded_rows: str = CHOICES["teacher_padded_rows"][0]
    teacher_cache: bool = True  # read the teacher from its cache when the cell is given one (repro.teacher_states)
    # a run whose loss diverges (repro.training.training_warnings): "warn" records it (log, summary, tables, report)
    # and goes on; "stop" fails the job at the end of the epoch where it is seen
    on_divergence: str = "warn"
    skew: float = 0.1
    akl_threshold: float = 0.5
    dev_seeds: list[int] = field(default_factory=lambda: [10])
    # extra dev sampling seeds, recorded per epoch but never used for the checkpoint choice: how often another dev
    # seed would have chosen another epoch (repro.tables.checkpoint_agreement)
    dev_check_seeds: list[int] = field(default_factory=list)
    lora: dict | None = None  # LoRA settings (repro.models.add_lora); None: full fine-tuning
    precision: str = "auto"  # bf16 autocast ("bf16"), none ("fp32"), or "auto": bf16 on a GPU, fp32 on a CPU
    processes: int = 1  # data-parallel processes of the job (GPUs); the global batch is split among them
    shard_optimizer: bool = False  # ZeRO stage 1 with several processes: AdamW state split across processes

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.on_divergence not in ("warn", "stop"):
            raise ValueError(f"training.on_divergence must be 'warn' or 'stop', got {self.on_divergence!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size % (self.micro_batch_size * self.processes):
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size x processes = "
                             f"{self.micro_batch_size} x {self.processes}")
        if self.epochs < 1 or self.lr <= 0 or self.projector_lr <= 0:
            raise ValueError(f"need epochs >= 1 and positive learning rates, got epochs={self.epochs}, "
                             f"lr={self.lr}, projector_lr={self.projector_lr}")

    @property
    def gradient_accumulation(self) -> int:
        """Micro batches per process and optimiser step: global batch / (micro batch x processes)."""
        return self.batch_size // (self.micro_batch_size * self.processes)

    def mixed_precision(self, on_gpu: bool) -> str:
        """The accelerate ``mixed_precision`` value: ``bf16`` or ``no`` (fp16 is not offered: it gives infinite
        DSKD losses, PAPER.md section 3)."""
        return "bf16" if self.precision == "bf16" or (self.precision == "auto" and on_gpu) else "no"

    def divergence_options(self) -> dict:
        """Per-divergence keyword options: the skew weight of skl/srkl and AKL's head/tail threshold."""
        return {"skl": {"skew": self.skew}, "srkl": {"skew": self.skew}, "akl": {"threshold": self.akl_threshold}}


def cosine_lr(step: int, total: int, peak: float, floor: float) -> float:
    """Learning rate at ``step`` of ``total``: cosine from ``peak`` down to ``floor``, no warmup."""
    progress = min(step / max(total, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def param_groups(student, modules, settings: TrainSettings) -> list[dict]:
    """AdamW parameter groups (PAPER.md section 3): weight decay on matrices only (no decay on biases and norm
    weights, i.e. on parameters with fewer than 2 dimensions); the method's own modules (projectors) in groups of
    their own at ``projector_lr``. Each group carries its ``peak_lr`` for the cosine schedule."""
    groups = []
    for params, peak in ((student.parameters(), settings.lr),
                         (modules.parameters() if modules is not None else [], settings.projector_lr)):
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "peak_lr": peak,
                               "weight_decay": settings.weight_decay if decay else 0.0})
    return groups


def make_accelerator(settings: TrainSettings):
    """The ``accelerate.Accelerator`` of a training job: device and process group (set up from the environment that
    ``accelerate launch`` or ``torchrun`` gives; one process otherwise) and bf16 autocast where asked for."""
    from accelerate import Accelerator

    on_gpu = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=settings.mixed_precision(on_gpu), cpu=not on_gpu)
    if accelerator.num_processes != settings.processes:
        raise ValueError(f"training.processes is {settings.processes} but this job runs as "
                         f"{accelerator.num_processes} processes; launch it with --num_processes {settings.processes}")
    return accelerator


def train(student, tokenizer, train_rows: list[dict], dev_rows: list[dict], method, ctx: Context,
          settings: TrainSettings, dev_decode: DecodeSettings, out_dir: str | os.PathLike,
          accelerator=None) -> dict:
    """Train ``student`` with ``method`` and keep the best checkpoint by dev Rouge-L in ``out_dir/model`` (for a
    peft LoRA model: its adapter, in ``out_dir/adapter``; ``repro.models.merge_lora`` makes the full model).

    Writes ``out_dir/train_log.jsonl`` (one record per optimiser step and per epoch; rewritten after every
    epoch). Returns a summary with the best epoch, its dev Rouge-L and the per-epoch history. ``student`` ends
    holding the LAST epoch's weights: evaluate the saved best checkpoint by loading ``out_dir/model``.

    Resumable: after every epoch, and every ``checkpoint_every`` optimiser steps when that is positive, the whole
    training state (student, projectors, optimiser, step, position in the epoch's data order, random states, best
    checkpoint, logs) is saved to ``out_dir/resume/state.pt``; a call that finds that file continues from it, so an
    interrupted run ends with the same weights as an uninterrupted one. The file is removed when training ends.

    Data parallel (``settings.processes`` > 1, launched by ``accelerate launch``): every process takes its share of
    each global batch, gradients are summed across processes before clipping, so every process takes the same
    step as one process with the whole batch would; the main process alone evaluates on the dev set and writes
    files. The model must already sit on ``accelerator.device``.
    """
    out_dir = Path(out_dir)
    accelerator = accelerator or make_accelerator(settings)
    n_procs, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    torch.manual_seed(settings.seed)
    teacher_tokenizer = ctx.teacher_tokenizer if method.cross_vocab else None
    encoded = encode_dataset(train_rows, tokenizer, settings.max_length, settings.max_prompt_length,
                             teacher_tokenizer=teacher_tokenizer)
    teacher_pad_id = teacher_tokenizer.pad_token_id if teacher_tokenizer is not None else None
    if ctx.teacher_states is not None:
        from .teacher_states import check_matches

        check_matches(ctx.teacher_states, encoded, "teacher-state cache")
    with accelerator.autocast():  # what prepare computes with the teacher, in the precision of the steps
        method.prepare(encoded, tokenizer, ctx)
    ctx.modules = method.build(student, ctx.teacher)
    groups = param_groups(student, ctx.modules, settings)
    if settings.shard_optimizer and n_procs > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        optimizer = ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=settings.lr)
    else:
        optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    trained = [p for group in groups for p in group["params"]]
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    order_rng = torch.Generator().manual_seed(settings.seed)
    log: list[dict] = []
    history: list[dict] = []
    best = {"epoch": None, "dev_rougeL": -math.inf}
    step, start_epoch, start_i, order = 0, 1, 0, None
    started = time.perf_counter()
    state_path = layout.resume_state_file(out_dir)
    best_dir = (layout.adapter_dir if hasattr(student, "peft_config") else layout.model_dir)(out_dir)

    def save_state(epoch: int, next_i: int, order: list[int] | None) -> None:
        if hasattr(optimizer, "consolidate_state_dict"):  # sharded: every process sends its part to the main one
            optimizer.consolidate_state_dict(to=0)
        if not main:
            return
        state = {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                 "modules": ctx.modules.state_dict() if ctx.modules is not None else None,
                 "step": step, "epoch": epoch, "next_i": next_i, "order": order, "order_rng": order_rng.get_state(),
                 "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                 "best": best, "history": history, "log": log, "elapsed": time.perf_counter() - started,
                 "fingerprint": fingerprint}
        with atomic_path(state_path) as tmp:
            torch.save(state, tmp)

    # What must not change between an interrupted run and its continuation.
    method_kind = next((c.__name__ for c in type(method).__mro__ if c.__module__ == "repro.methods"),
                       type(method).__name__)
    fingerprint = {"settings": asdict(settings), "examples": len(encoded), "method": method_kind,
                   "divergence": ctx.divergence}
    if state_path.exists():
        state = torch.load(state_path, map_location=student.device, weights_only=False)
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{state_path}: this resume state was written by a run with other settings or data "
                             f"({state.get('fingerprint')}); delete it to start afresh")
        student.load_state_dict(state["student"])
        if ctx.modules is not None:
            ctx.modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        step, start_epoch, start_i, order = state["step"], state["epoch"], state["next_i"], state["order"]
        best, history, log = state["best"], state["history"], state["log"]
        order_rng.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        started -= state["elapsed"]
    for epoch in range(start_epoch, settings.epochs + 1):
        student.train()
        if ctx.modules is not None:
            ctx.modules.train()
        if order is None:
            order = torch.randperm(len(encoded), generator=order_rng).tolist()
        bar = tqdm(range(start_i, steps_per_epoch), desc=f"epoch {epoch}/{settings.epochs}", leave=False)
        for i in bar:
            batch_items = [encoded[j] for j in order[i * settings.batch_size:(i + 1) * settings.batch_size]]
            n_tokens = sum(sum(label != IGNORE for label in e.labels) for e in batch_items)
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, group["peak_lr"], settings.min_lr)
            sums: dict[str, float] = {}
            method.begin_step(batch_items, ctx)
            # This process's share of the global batch, by length: micro batches of similar lengths waste little
            # on padding, and the gradient is the same: every method's loss is a sum over examples, divided by the
            # global token count, and what a method takes from the whole batch (DSKD-CMA's standard deviations) it
            # takes from ``begin_step``, over the global batch (tested: 4 vs 2 + 2 examples vs two processes).
            local = sorted(batch_items[rank::n_procs], key=lambda e: len(e.input_ids))
            for k in range(0, len(local), settings.micro_batch_size):
                batch = collate(local[k:k + settings.micro_batch_size], tokenizer.pad_token_id, teacher_pad_id)
                batch = {name: t.to(student.device) for name, t in batch.items()}
                with accelerator.autocast():
                    terms = method.loss(student, batch, ctx)
                (terms["loss"] / n_tokens).backward()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value.item() / n_tokens
            if n_procs > 1:
                sums = _sum_across_processes(accelerator, trained, sums)
            if not all(math.isfinite(v) for v in sums.values()):  # stop before a NaN reaches the weights
                raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {step + 1}: {sums}")
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, settings.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.append({"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm), **sums})
            bar.set_postfix(loss=f"{sums['loss']:.3f}", refresh=False)
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and i + 1 < steps_per_epoch:
                save_state(epoch, i + 1, order)
        start_i, order = 0, None
        dev_score = None
        if main:
            with accelerator.autocast():
                dev = evaluate_set(student, tokenizer, dev_rows, settings.dev_seeds, dev_decode, name="dev")
            dev_score = dev["mean"]
        if n_procs > 1:
            from accelerate.utils import broadcast_object_list

            dev_score = broadcast_object_list([dev_score])[0]
        epoch_losses = [r["loss"] for r in log if r.get("epoch") == epoch and "step" in r]
        record = {"epoch": epoch, "dev_rougeL": dev_score,
                  "train_loss": sum(epoch_losses) / len(epoch_losses) if epoch_losses else None,
                  "elapsed_s": time.perf_counter() - started}
        if settings.dev_check_seeds and main:  # (the main process alone: the record is its own)
            with accelerator.autocast():
                check = evaluate_set(student, tokenizer, dev_rows, settings.dev_check_seeds, dev_decode,
                                     name="dev check")
            record["dev_check_rougeL"] = {str(seed): value for seed, value in check["per_seed"].items()}
        history.append(record)
        log.append({"event": "epoch_end", **record})
        if settings.on_divergence == "stop":
            problems = training_warnings(log, history, final=epoch == settings.epochs)
            if problems:
                if main:
                    write_jsonl(layout.train_log_file(out_dir), log)
                raise TrainingDiverged(f"{out_dir}: stopped after epoch {epoch} (training.on_divergence: stop): "
                                       + "; ".join(problems))
        if dev_score > best["dev_rougeL"]:
            best = {"epoch": epoch, "dev_rougeL": dev_score}
            if main:
                with atomic_path(best_dir) as tmp:
                    student.save_pretrained(tmp)
                    tokenizer.save_pretrained(tmp)
        if main:
            write_jsonl(layout.train_log_file(out_dir), log)  # rewritten every epoch, so a long run can be followed
        save_state(epoch + 1, 0, None)
        accelerator.wait_for_everyone()
    if main:
        state_path.unlink(missing_ok=True)
        if state_path.parent.is_dir() and not any(state_path.parent.iterdir()):
            state_path.parent.rmdir()
    check_best = {seed: max(history, key=lambda r: r["dev_check_rougeL"][seed])["epoch"]
                  for seed in (history[0].get("dev_check_rougeL", {}) if history else {})}
    problems = training_warnings(log, history)
    for problem in problems:
        logging.getLogger("repro").warning("%s: %s", out_dir, problem)
    return {"best_epoch": best["epoch"], "best_dev_rougeL": best["dev_rougeL"], "history": history,
            "best_epoch_by_check_seed": check_best, "warnings": problems,
            "steps": step, "train_seconds": time.perf_counter() - started, "checkpoint": str(best_dir),
            "trainable_parameters": sum(p.numel() for p in trained),
            "batching": {"global_batch": settings.batch_size, "micro_batch": settings.micro_batch_size,
                         "gradient_accumulation": settings.gradient_accumulation, "processes": n_procs,
                         "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device)},
            "peak_gpu_memory_gib": (torch.cuda.max_memory_allocated(accelerator.device) / 2**30
                                    if accelerator.device.type == "cuda" else None)}


class TrainingDiverged(RuntimeError):
    """A run stopped by ``training.on_divergence: stop`` (the message says why)."""


def training_warnings(log: list[dict], history: list[dict], final: bool = True) -> list[str]:
    """Signs that a run failed while its losses stayed finite: a training loss that ended well above where it
    started (the mean of the last epoch's steps above 1.5 times the mean of the first tenth of the first epoch's),
    or, for a finished run (``final``), a dev Rouge-L of 0 after every epoch."""
    steps = [r for r in log if "step" in r and "event" not in r]
    problems = []
    if steps and history:
        first_epoch = [r["loss"] for r in steps if r["epoch"] == steps[0]["epoch"]]
        start = first_epoch[:max(1, len(first_epoch) // 10)]
        end = [r["loss"] for r in steps if r["epoch"] == steps[-1]["epoch"]]
        before, after = sum(start) / len(start), sum(end) / len(end)
        if after > 1.5 * before:
            problems.append(f"the training loss rose from {before:.4g} (first steps) to {after:.4g} (last epoch's "
                            f"mean): the run diverged; a lower learning rate may help")
    if final and history and all((h["dev_rougeL"] or 0) == 0 for h in history):
        problems.append(f"dev Rouge-L was 0 after each of the {len(history)} epochs: the model's samples share "
                        f"nothing with the references")
    return problems


def _sum_across_processes(accelerator, params, sums: dict[str, float]) -> dict[str, float]:
    """Sum every trained parameter's gradient (a missing one counts as zero) and the logged loss terms over all
    processes, in place for the gradients; return the summed terms."""
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    gathered: list = [None] * accelerator.num_processes
    dist.all_gather_object(gathered, sorted(sums))  # a process whose share of a short last batch is empty has none
    names = sorted(set().union(*gathered))
    values = torch.tensor([sums.get(n, 0.0) for n in names], dtype=torch.float64, device=flat.device)
    dist.all_reduce(values)
    return dict(zip(names, values.tolist()))
