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
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import broadcast_object_list
from torch.distributed.optim import ZeroRedundancyOptimizer
from tqdm import tqdm
from transformers.utils import cached_file

from . import layout
from .data import IGNORE, collate, encode_dataset
from .device import make_accelerator
from .generation import DecodeSettings, evaluate_set
from .io import atomic_path, write_jsonl
from .methods import Context
from .models import save_model
from .settings import TrainSettings
from .teacher_states import check_matches


def build_context(settings: TrainSettings, tokenizer, divergence: str | None = None, teacher=None,
                  teacher_tokenizer=None, teacher_states=None) -> Context:
    """The ``repro.methods.Context`` of a run: its settings (every value a method reads of them), the student's
    vocabulary, the divergence, the teacher, its tokenizer (cross-vocabulary methods) and its cache. The cells and
    the tests build every context here."""
    ctx = Context(n_vocab=len(tokenizer), settings=settings, divergence=divergence, teacher=teacher,
                  teacher_states=teacher_states)
    if teacher_tokenizer is not None:
        ctx.teacher_tokenizer, ctx.teacher_n_vocab = teacher_tokenizer, len(teacher_tokenizer)
    return ctx


def cosine_lr(step: int, total: int, peak: float, floor: float) -> float:
    """Learning rate at ``step`` of ``total``: cosine from ``peak`` down to ``floor``, no warmup."""
    progress = min(step / max(total, 1), 1.0)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def param_groups(student, modules, settings: TrainSettings) -> list[dict]:
    """AdamW parameter groups (PAPER.md section 3): weight decay on matrices only (no decay on biases and norm
    weights, i.e. on parameters with fewer than 2 dimensions); the method's own modules (projectors) in groups of
    their own at ``projector_lr``. Each group carries its ``peak_lr`` for the cosine schedule."""
    groups = []
    sources = [(student.parameters(), settings.lr)]
    if modules is not None:
        sources.append((modules.parameters(), settings.projector_lr))
    for params, peak in sources:
        params = [p for p in params if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                groups.append({"params": chosen, "peak_lr": peak,
                               "weight_decay": settings.weight_decay if decay else 0.0})
    return groups


# 2: the state holds the student's trained parameters by name (1 held its whole state_dict)
STATE_FORMAT = 2


def frozen_base(student) -> dict | None:
    """What a resume state, which holds the student's trained parameters only, takes from outside: the checkpoint
    its frozen parameters (a LoRA base) were loaded from, as its ``name_or_path`` and each file's name, size and
    modification time (a stat each, nothing read), and their dtypes. None when every parameter trains."""
    frozen = [p for p in student.parameters() if not p.requires_grad]
    if not frozen:
        return None
    source = str(getattr(student, "name_or_path", "") or "")
    folder = Path(source)
    if source and not folder.is_dir():  # a hub id: the snapshot it was loaded from
        try:
            folder = Path(cached_file(source, "config.json", local_files_only=True)).parent
        except OSError:
            folder = None
    if not source or folder is None:
        raise ValueError(f"the student has frozen parameters but no checkpoint folder they were loaded from "
                         f"(name_or_path {source!r}); a resume state holds the trained parameters only, so load "
                         f"the model with repro.models.load_model")
    files = sorted([f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in folder.iterdir() if f.is_file())
    return {"path": source, "files": files, "dtype": sorted({str(p.dtype) for p in frozen})}


def _base_change(saved: dict | None, now: dict | None) -> str:
    """How the frozen base of a resume state (``frozen_base``) differs from the one loaded now, in words."""
    if saved is None or now is None:
        return f"the state's run {'froze no parameter' if saved is None else 'had a frozen base'}, this one " \
               f"{'freezes none' if now is None else 'has one'}"
    if saved["path"] != now["path"]:
        return f"it was {saved['path']}, now {now['path']}"
    if saved["dtype"] != now["dtype"]:
        return f"{now['path']} was held in {'/'.join(saved['dtype'])}, now in {'/'.join(now['dtype'])}"
    old, new = ({name: (size, mtime) for name, size, mtime in base["files"]} for base in (saved, now))
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    return f"{now['path']}: {', '.join(changed)} changed (added, removed, resized or modified) since"


def train(student, tokenizer, train_rows: list[dict], dev_rows: list[dict], method, ctx: Context,
          dev_decode: DecodeSettings, out_dir: str | os.PathLike, accelerator=None) -> dict:
    """Train ``student`` with ``method`` and the run's settings (``ctx.settings``) and keep the best checkpoint by
    dev Rouge-L in ``out_dir/model`` (for a peft LoRA model: its adapter, in ``out_dir/adapter``;
    ``repro.models.merge_lora`` makes the full model).

    Writes ``out_dir/train_log.jsonl`` (one record per optimiser step and per epoch; rewritten after every
    epoch). Returns a summary with the best epoch, its dev Rouge-L and the per-epoch history. ``student`` ends
    holding the LAST epoch's weights: evaluate the saved best checkpoint by loading ``out_dir/model``.

    Resumable: after every epoch, and every ``checkpoint_every`` optimiser steps when that is positive, the
    training state (the student's trained parameters, projectors, optimiser, step, position in the epoch's data
    order, random states, best checkpoint, logs) is saved to ``out_dir/resume/state.pt``; a call that finds that
    file continues from it, so an interrupted run ends with the same weights as an uninterrupted one. A LoRA
    student's frozen base is not in the state: it comes back from the checkpoint it was loaded from, which must be
    the same files (``frozen_base``). The file is removed when training ends.

    Data parallel (``settings.processes`` > 1, launched by ``accelerate launch``): every process takes its share of
    each global batch, gradients are summed across processes before clipping, so every process takes the same
    step as one process with the whole batch would; the main process alone evaluates on the dev set and writes
    files. The model must already sit on ``accelerator.device``.

    The steps, in order: ``Trainer`` sets up (the encoded data, the method's preparation and modules, the
    optimiser) and ``Trainer.resume`` reads a saved state; then per epoch the optimiser steps
    (``Trainer.optimiser_step``) and the end of the epoch (``Trainer.end_epoch``: dev sampling, the best checkpoint,
    the saved state); ``Trainer.finish`` returns the summary. (A "run" is one of the grid's training runs,
    ``repro.grid.runs``; the trainer is the loop that trains one.)
    """
    settings = ctx.settings
    trainer = Trainer(student, tokenizer, train_rows, method, ctx, out_dir, accelerator)
    trainer.resume()
    for epoch in range(trainer.epoch, settings.epochs + 1):
        for i, batch_items in trainer.batches(epoch):
            trainer.optimiser_step(epoch, batch_items)
            if (settings.checkpoint_every and trainer.step % settings.checkpoint_every == 0
                    and i + 1 < trainer.steps_per_epoch):
                trainer.save(epoch, i + 1, trainer.order)
        trainer.end_epoch(epoch, dev_rows, dev_decode)
    return trainer.finish()


class Trainer:
    """The state of one training run between its steps: the encoded training set, the optimiser and its
    parameter groups, the step count and the epoch's data order, the per-step log, the per-epoch history and the
    best checkpoint so far. See ``train`` for the order in which its steps are taken."""

    def __init__(self, student, tokenizer, train_rows: list[dict], method, ctx: Context, out_dir: str | os.PathLike,
                 accelerator=None):
        settings = ctx.settings
        self.student, self.tokenizer, self.method, self.ctx, self.settings = student, tokenizer, method, ctx, settings
        self.out_dir = Path(out_dir)
        self.accelerator = accelerator = accelerator or make_accelerator(settings)
        self.n_procs, self.rank, self.main = (accelerator.num_processes, accelerator.process_index,
                                              accelerator.is_main_process)
        torch.manual_seed(settings.seed)
        teacher_tokenizer = ctx.teacher_tokenizer if method.cross_vocab else None
        self.encoded = encode_dataset(train_rows, tokenizer, settings.max_length, settings.max_prompt_length,
                                      teacher_tokenizer=teacher_tokenizer)
        self.teacher_pad_id = teacher_tokenizer.pad_token_id if teacher_tokenizer is not None else None
        if ctx.teacher_states is not None:
            check_matches(ctx.teacher_states, self.encoded, "teacher-state cache")
        with accelerator.autocast():  # what prepare computes with the teacher, in the precision of the steps
            method.prepare(self.encoded, tokenizer, ctx)
        ctx.modules = method.build(student, ctx.teacher)
        groups = param_groups(student, ctx.modules, settings)
        if settings.shard_optimizer and self.n_procs > 1:
            self.optimizer = ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=settings.lr)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=settings.lr)
        self.trained = [p for group in groups for p in group["params"]]
        # what the resume state holds of the student (all of it in full fine-tuning, a LoRA student's adapters)
        self.student_trained = [name for name, p in student.named_parameters() if p.requires_grad]
        self.steps_per_epoch = math.ceil(len(self.encoded) / settings.batch_size)
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.order_rng = torch.Generator().manual_seed(settings.seed)
        self.log: list[dict] = []
        self.history: list[dict] = []
        self.best = {"epoch": None, "dev_rougeL": -math.inf}
        self.step, self.epoch, self.next_i, self.order = 0, 1, 0, None
        self.started = time.perf_counter()
        self.state_path = layout.resume_state_file(self.out_dir)
        self.best_dir = (layout.adapter_dir if hasattr(student, "peft_config") else layout.model_dir)(self.out_dir)
        # What must not change between an interrupted run and its continuation.
        method_kind = next((c.__name__ for c in type(method).__mro__ if c.__module__ == "repro.methods"),
                           type(method).__name__)
        self.fingerprint = {"format": STATE_FORMAT, "settings": asdict(settings), "examples": len(self.encoded),
                            "method": method_kind, "divergence": ctx.divergence, "base": frozen_base(student)}

    def save(self, epoch: int, next_i: int, order: list[int] | None) -> None:
        """Save the training state (``out_dir/resume/state.pt``), to go on at step ``next_i`` of ``epoch``: of the
        student its trained parameters alone (a LoRA run's frozen base is the checkpoint's, ``frozen_base``), the
        method's modules, the optimiser's state (of the trained parameters only), counters, random states, logs."""
        if hasattr(self.optimizer, "consolidate_state_dict"):  # sharded: every process sends its part to the main
            self.optimizer.consolidate_state_dict(to=0)
        if not self.main:
            return
        modules = self.ctx.modules
        params = dict(self.student.named_parameters())
        state = {"student": {name: params[name].detach() for name in self.student_trained},
                 "optimizer": self.optimizer.state_dict(),
                 "modules": modules.state_dict() if modules is not None else None,
                 "step": self.step, "epoch": epoch, "next_i": next_i, "order": order,
                 "order_rng": self.order_rng.get_state(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                 "best": self.best, "history": self.history, "log": self.log,
                 "elapsed": time.perf_counter() - self.started, "fingerprint": self.fingerprint}
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def resume(self) -> None:
        """Continue from a saved state where there is one (refused when it was written with other settings or
        data, or on a frozen base whose files have changed since)."""
        if not self.state_path.exists():
            return
        state = torch.load(self.state_path, map_location=self.student.device, weights_only=False)
        saved = state.get("fingerprint") or {}
        if saved != self.fingerprint:
            differ = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            if differ == ["base"]:
                raise ValueError(f"{self.state_path}: this resume state holds the trained parameters only, and the "
                                 f"frozen base they were trained on is not the one loaded now ("
                                 f"{_base_change(saved['base'], self.fingerprint['base'])}); load the same checkpoint "
                                 f"files, or delete the state to start afresh")
            raise ValueError(f"{self.state_path}: this resume state was written by a run with other settings or "
                             f"data (differs in: {', '.join(differ)}); delete it to start afresh")
        params = dict(self.student.named_parameters())
        if sorted(state["student"]) != sorted(self.student_trained):
            raise ValueError(f"{self.state_path}: the state holds {len(state['student'])} trained parameters of the "
                             f"student, this run trains {len(self.student_trained)} others; delete it to start afresh")
        with torch.no_grad():
            for name, value in state["student"].items():
                params[name].copy_(value)
        if self.ctx.modules is not None:
            self.ctx.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.next_i, self.order = state["step"], state["epoch"], state["next_i"], state["order"]
        self.best, self.history, self.log = state["best"], state["history"], state["log"]
        self.order_rng.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.started -= state["elapsed"]

    def batches(self, epoch: int):
        """The global batches of ``epoch`` still to take, ``(index in the epoch, examples)``, in the epoch's data
        order (drawn at the epoch's start, or the resumed one); a progress bar goes to the job's log."""
        self.student.train()
        if self.ctx.modules is not None:
            self.ctx.modules.train()
        if self.order is None:
            self.order = torch.randperm(len(self.encoded), generator=self.order_rng).tolist()
        size = self.settings.batch_size
        bar = tqdm(range(self.next_i, self.steps_per_epoch), desc=f"epoch {epoch}/{self.settings.epochs}", leave=False)
        for i in bar:
            yield i, [self.encoded[j] for j in self.order[i * size:(i + 1) * size]]
            if self.log and "loss" in self.log[-1]:  # the step just taken (``optimiser_step``), on the bar
                bar.set_postfix(loss=f"{self.log[-1]['loss']:.3f}", refresh=False)
        self.next_i, self.order = 0, None

    def optimiser_step(self, epoch: int, batch_items: list) -> dict[str, float]:
        """One optimiser step on a global batch: the learning rate of the step, the method's loss on this process's
        micro batches (each divided by the global batch's response tokens), gradients summed across processes,
        clipping, AdamW; logs and returns the loss terms per token."""
        settings, method, ctx, student = self.settings, self.method, self.ctx, self.student
        n_tokens = sum(sum(label != IGNORE for label in e.labels) for e in batch_items)
        for group in self.optimizer.param_groups:
            group["lr"] = cosine_lr(self.step, self.total_steps, group["peak_lr"], settings.min_lr)
        sums: dict[str, float] = {}
        method.begin_step(batch_items, ctx)
        # This process's share of the global batch, by length: micro batches of similar lengths waste little on
        # padding, and the gradient is the same: every method's loss is a sum over examples, divided by the global
        # token count, and what a method takes from the whole batch (DSKD-CMA's standard deviations) it takes from
        # ``begin_step``, over the global batch (tested: 4 vs 2 + 2 examples vs two processes).
        local = sorted(batch_items[self.rank::self.n_procs], key=lambda e: len(e.input_ids))
        for k in range(0, len(local), settings.micro_batch_size):
            batch = collate(local[k:k + settings.micro_batch_size], self.tokenizer.pad_token_id, self.teacher_pad_id)
            batch = {name: t.to(student.device) for name, t in batch.items()}
            with self.accelerator.autocast():
                terms = method.loss(student, batch, ctx)
            (terms["loss"] / n_tokens).backward()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item() / n_tokens
        if self.n_procs > 1:
            sums = _sum_across_processes(self.accelerator, self.trained, sums)
        if not all(math.isfinite(v) for v in sums.values()):  # stop before a NaN reaches the weights
            raise FloatingPointError(f"non-finite loss at epoch {epoch}, step {self.step + 1}: {sums}")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, settings.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.log.append({"step": self.step, "epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                         "grad_norm": float(grad_norm), **sums})
        return sums

    def end_epoch(self, epoch: int, dev_rows: list[dict], dev_decode: DecodeSettings) -> None:
        """The end of an epoch: dev Rouge-L (and the check seeds' record), the epoch's record, the divergence
        check, the best checkpoint when this epoch is the best so far, the log file and the saved state."""
        settings, accelerator, main = self.settings, self.accelerator, self.main
        dev_score = None
        if main:
            with accelerator.autocast():
                dev = evaluate_set(self.student, self.tokenizer, dev_rows, settings.dev_seeds, dev_decode, name="dev")
            dev_score = dev["mean"]
        if self.n_procs > 1:
            dev_score = broadcast_object_list([dev_score])[0]
        epoch_losses = [r["loss"] for r in self.log if r.get("epoch") == epoch and "step" in r]
        record = {"epoch": epoch, "dev_rougeL": dev_score,
                  "train_loss": sum(epoch_losses) / len(epoch_losses) if epoch_losses else None,
                  "elapsed_s": time.perf_counter() - self.started}
        if settings.dev_check_seeds and main:  # (the main process alone: the record is its own)
            with accelerator.autocast():
                check = evaluate_set(self.student, self.tokenizer, dev_rows, settings.dev_check_seeds, dev_decode,
                                     name="dev check")
            record["dev_check_rougeL"] = {str(seed): value for seed, value in check["per_seed"].items()}
        self.history.append(record)
        self.log.append({"event": "epoch_end", **record})
        if settings.on_divergence == "stop":
            problems = training_warnings(self.log, self.history, final=epoch == settings.epochs)
            if problems:
                if main:
                    write_jsonl(layout.train_log_file(self.out_dir), self.log)
                raise TrainingDiverged(f"{self.out_dir}: stopped after epoch {epoch} (training.on_divergence: "
                                       f"stop): " + "; ".join(problems))
        if dev_score > self.best["dev_rougeL"]:
            self.best = {"epoch": epoch, "dev_rougeL": dev_score}
            if main:
                save_model(self.student, self.tokenizer, self.best_dir,
                           settings.saved_dtype(accelerator.device.type == "cuda"))
        if main:  # rewritten every epoch, so a long run can be followed
            write_jsonl(layout.train_log_file(self.out_dir), self.log)
        if epoch < settings.epochs:  # after the last epoch ``finish`` follows at once and removes the state: a state
            self.save(epoch + 1, 0, None)  # written there (3x the weights in full fine-tuning) would serve no resume
        accelerator.wait_for_everyone()

    def finish(self) -> dict:
        """Remove the resume state and return the run's summary (best epoch, history, warnings, batching)."""
        accelerator, history = self.accelerator, self.history
        if self.main:
            self.state_path.unlink(missing_ok=True)
            if self.state_path.parent.is_dir() and not any(self.state_path.parent.iterdir()):
                self.state_path.parent.rmdir()
        check_best = {seed: max(history, key=lambda r: r["dev_check_rougeL"][seed])["epoch"]
                      for seed in (history[0].get("dev_check_rougeL", {}) if history else {})}
        problems = training_warnings(self.log, history)
        for problem in problems:
            logging.getLogger("repro").warning("%s: %s", self.out_dir, problem)
        settings = self.settings
        return {"best_epoch": self.best["epoch"], "best_dev_rougeL": self.best["dev_rougeL"], "history": history,
                "best_epoch_by_check_seed": check_best, "warnings": problems,
                "steps": self.step, "train_seconds": time.perf_counter() - self.started,
                "checkpoint": str(self.best_dir), "trainable_parameters": sum(p.numel() for p in self.trained),
                "batching": {"global_batch": settings.batch_size, "micro_batch": settings.micro_batch_size,
                             "gradient_accumulation": settings.gradient_accumulation, "processes": self.n_procs,
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
