"""One training run of a table cell, end to end: train the model of the row with one training seed, then evaluate
its best checkpoint on the five test sets.

The run's notebook (``notebooks/train.py``, and ``notebooks/evaluate.py`` when evaluation is a job of its own) builds
a ``CellConfig`` from its papermill parameters and calls ``run_training`` and ``evaluate_cell``; everything
machine-readable is written here (JSON/JSONL), atomically.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
import torch
from transformers.utils import logging as hf_logging

from . import layout, memory, names, teacher_states
from .data import load_examples
from .device import device_name, make_accelerator, on_gpu
from .generation import DecodeSettings, evaluate_set, teacher_targets
from .io import read_json, read_jsonl, write_json, write_jsonl
from .methods import get_method
from .metrics import mean_std
from .models import add_lora, count_parameters, load_model, load_teacher_parts, merge_lora
from .names import CROSS_VOCAB_METHODS, TEST_SETS, names_list
from .settings import TrainSettings, merges_lora
from .training import build_context, train
from .vocab import load_tokenizer

DECODE_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "no_repeat_ngram_size", "batch_size")


@dataclass(frozen=True)
class CellConfig:
    """Everything one run's job needs; built from the notebook parameters (see ``repro.grid.cell_params``);
    ``cell_id`` is the run's id, ``{pair}/{row}/seed{seed}``."""
    cell_id: str
    pair: str
    method: str
    role: str
    model: str
    data_dir: str
    out_dir: str
    training: dict
    evaluation: dict
    divergence: str | None = None  # None: a row without one (SFT, SeqKD, ULD, MinED)
    teacher: str | None = None  # the fine-tuned teacher's checkpoint; None: a row without a teacher
    teacher_states: str | None = None  # the pair's teacher-state cache (repro.teacher_states); None: the live teacher
    threads: int = 1
    test_sets: tuple[str, ...] = TEST_SETS

    @classmethod
    def from_parameters(cls, namespace: dict) -> CellConfig:
        """The config from a notebook's parameters (``globals()`` after papermill's injected cell): every field of
        this class that the namespace holds."""
        values = {f.name: namespace[f.name] for f in fields(cls) if f.name in namespace}
        if "test_sets" in values:
            values["test_sets"] = tuple(values["test_sets"])
        return cls(**values)

    def __post_init__(self):
        if self.role not in ("teacher", "student"):
            raise ValueError(f"cell {self.cell_id}: role must be 'teacher' or 'student', got {self.role!r}")
        if not self.evaluation.get("seeds"):
            raise ValueError(f"cell {self.cell_id}: evaluation.seeds must list at least one sampling seed")
        method = get_method(self.method)
        if method.needs_teacher and self.role == "student" and not self.teacher:
            raise ValueError(f"cell {self.cell_id}: method {self.method!r} needs a teacher checkpoint")
        if method.needs_divergence and self.divergence is None:
            raise ValueError(f"cell {self.cell_id}: method {self.method!r} needs a divergence")
        if self.divergence is not None and self.divergence not in names.DIVERGENCES:
            raise ValueError(f"cell {self.cell_id}: divergence must be one of {list(names.DIVERGENCES)} or None (a row "
                             f"without one), got {self.divergence!r}")
        unknown = set(self.evaluation) - set(DECODE_KEYS) - {"seeds"}
        if unknown:
            raise ValueError(f"cell {self.cell_id}: unknown evaluation keys {sorted(unknown)}")

    @property
    def settings(self):
        """The run's ``repro.settings.TrainSettings`` (from ``training``)."""
        return TrainSettings(**self.training)

    def decode_settings(self, test: bool):
        values = {k: self.evaluation[k] for k in DECODE_KEYS if k in self.evaluation}
        values["max_prompt_length"] = self.settings.max_prompt_length
        if not test:
            values["no_repeat_ngram_size"] = 0  # dev sampling has no n-gram blocking (PAPER.md section 3)
        return DecodeSettings(**values)


def _setup(cfg: CellConfig):
    torch.set_num_threads(cfg.threads)
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars would flood the rendered notebook


def _gpu_peak() -> int | None:
    """The job's peak GPU memory held by tensors (bytes), None without a GPU (``repro.memory.finish_measure``)."""
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def train_cell(cfg: CellConfig) -> dict:
    """Train the cell's model; the best checkpoint by dev Rouge-L lands in ``out_dir/model``.

    Returns (and writes to ``out_dir/train_summary.json``) the training summary.
    """
    _setup(cfg)
    measure = memory.start_measure()  # the job's memory, recorded in its summary (repro.memory)
    settings = cfg.settings
    accelerator = make_accelerator(settings)
    device = accelerator.device
    gpu = accelerator.device.type == "cuda"
    dtype = settings.frozen_dtype(gpu)  # frozen weights: teachers, LoRA bases
    data = Path(cfg.data_dir)
    train_rows = load_examples(data / "train.jsonl")
    dev_rows = load_examples(data / "dev.jsonl")
    tokenizer = load_tokenizer(cfg.model)
    if settings.lora:  # a frozen base in the precision of the steps (bf16 under bf16); the adapters train in fp32
        torch.manual_seed(settings.seed)  # the adapters' random initialisation follows the run's seed
        student = add_lora(load_model(cfg.model, dtype), settings.lora)
    else:
        student = load_model(cfg.model)
    student = student.to(device)
    method = get_method(cfg.method)
    cached = bool(settings.teacher_cache and cfg.teacher_states)  # the teacher's states come from its cache
    teacher = None
    if method.black_box:
        train_rows = _teacher_targets(cfg, train_rows, settings, device, dtype, accelerator.is_main_process)
    elif method.needs_teacher:
        teacher_tok = load_tokenizer(cfg.teacher)
        if not method.cross_vocab and teacher_tok.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"cell {cfg.cell_id}: method {cfg.method!r} needs teacher and student to share a "
                             f"vocabulary, but {cfg.teacher} and {cfg.model} tokenize differently; use a "
                             f"cross-vocabulary method ({names_list(CROSS_VOCAB_METHODS)}) for this pair")
        teacher = _frozen_teacher(cfg, method, dtype, cached).to(device).eval()
        teacher.requires_grad_(False)
    states = None
    if teacher is not None and cached:
        expected = teacher_states.fingerprint(cfg.teacher, data / "train.jsonl", settings.max_length,
                                              settings.max_prompt_length, dtype)
        states = teacher_states.load(cfg.teacher_states, expected)
    ctx = build_context(settings, tokenizer, cfg.divergence, teacher,
                        teacher_tok if teacher is not None and method.cross_vocab else None, states)
    summary = train(student, tokenizer, train_rows, dev_rows, method, ctx,
                    cfg.decode_settings(test=False), cfg.out_dir, accelerator)
    summary.update({"cell": cfg.cell_id, "parameters": count_parameters(student), "config": asdict(cfg),
                    "teacher_parameters": count_parameters(teacher) if teacher is not None else None})
    if not accelerator.is_main_process:
        return summary
    if settings.lora and merges_lora(cfg.role):
        merge_lora(cfg.model, summary["checkpoint"], layout.model_dir(cfg.out_dir), tokenizer,
                   settings.saved_dtype(gpu))
    elif settings.lora:  # a student's model is its adapter (megabytes): its readers merge it on loading
        summary["checkpoint"] = str(_keep_adapter(Path(summary["checkpoint"]), layout.model_dir(cfg.out_dir)))
    summary["memory"] = memory.finish_measure(measure, _gpu_peak())
    write_json(layout.train_summary_file(cfg.out_dir), summary)
    return summary


def _keep_adapter(adapter: Path, model_dir: Path) -> Path:
    """Make the best adapter the run's model folder (``repro.models.load_model`` reads it as base and adapter,
    merged); a model folder an interrupted earlier run left is replaced."""
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(adapter, model_dir)
    return model_dir


def _frozen_teacher(cfg: CellConfig, method, dtype: str, cached: bool) -> torch.nn.Module:
    """The white-box teacher a student cell holds: when it reads the teacher-state cache (``cached``), only the
    teacher's head (and its input embeddings for a method with the ``teacher_embeddings`` trait;
    ``repro.models.load_teacher_parts``), as the cache stands in for its body; else the whole model."""
    if cached:
        return load_teacher_parts(cfg.teacher, dtype, embeddings=method.teacher_embeddings)
    return load_model(cfg.teacher, dtype)


def _teacher_targets(cfg: CellConfig, rows: list[dict], settings, device, dtype: str, main: bool) -> list[dict]:
    """SeqKD: the teacher (with its own tokenizer) answers every training prompt, by sampling with the dev decoding
    settings and the training seed; the result is kept in ``out_dir/seqkd_train.jsonl``."""
    teacher = load_model(cfg.teacher, dtype).to(device)
    # Every process samples the same targets (same seed, same model); the main one keeps them.
    targets = teacher_targets(teacher, load_tokenizer(cfg.teacher), rows, settings.seed,
                              cfg.decode_settings(test=False))
    if main:
        write_jsonl(layout.seqkd_targets_file(cfg.out_dir), targets)
    return targets


def evaluate_cell(cfg: CellConfig) -> dict:
    """Sample from the cell's best checkpoint on every test set and seed; score with Rouge-L.

    Writes generations to ``out_dir/generations/`` and the scores to ``out_dir/scores.json`` (written last: its
    presence marks a finished cell). Returns the scores.
    """
    _setup(cfg)
    measure = memory.start_measure()
    dtype = cfg.settings.frozen_dtype(on_gpu())
    out = Path(cfg.out_dir)
    checkpoint = layout.model_dir(out)
    tokenizer = load_tokenizer(checkpoint)
    model = load_model(checkpoint, dtype).to(device_name())
    decode = cfg.decode_settings(test=True)
    results = {}
    for name in cfg.test_sets:
        rows = load_examples(Path(cfg.data_dir) / "test" / f"{name}.jsonl")
        results[name] = evaluate_set(model, tokenizer, rows, cfg.evaluation["seeds"], decode,
                                     out_dir=layout.generations_dir(out), name=name)
    # "Avg" is the mean of the five test-set means (PAPER.md section 4); its spread is over per-seed averages.
    per_seed_avg = [sum(results[t]["per_seed"][s] for t in cfg.test_sets) / len(cfg.test_sets)
                    for s in cfg.evaluation["seeds"]]
    train_summary = read_json(layout.train_summary_file(out))
    scores = {"cell": cfg.cell_id, "pair": cfg.pair, "method": cfg.method, "role": cfg.role,
              "divergence": cfg.divergence, "test_sets": results,
              "avg": {**mean_std(per_seed_avg), "mean": sum(results[t]["mean"] for t in cfg.test_sets)
                      / len(cfg.test_sets)},
              "best_epoch": train_summary["best_epoch"], "best_dev_rougeL": train_summary["best_dev_rougeL"]}
    write_json(layout.evaluation_memory_file(out), memory.finish_measure(measure, _gpu_peak()))
    write_json(layout.scores_file(out), scores)
    return scores


def score_table(scores: dict):
    """The scores of ``evaluate_cell`` as a table for a notebook: per test set and Avg, the mean and std of
    Rouge-L over sampling seeds and the number of examples (an integer)."""
    rows = {name: {"mean": r["mean"], "std": r["std"], "examples": r["n"]} for name, r in scores["test_sets"].items()}
    rows["Avg"] = {"mean": scores["avg"]["mean"], "std": scores["avg"]["std"],
                   "examples": sum(r["n"] for r in scores["test_sets"].values())}
    return pd.DataFrame(rows).T.astype({"examples": int}).round(2)


def sample_generations(out_dir: str | Path, per_set: int = 2):
    """A few of a run's test generations for a reader: the first ``per_set`` prompts of each test set (first
    sampling seed), with instruction, input, first reference, prediction and Rouge-L."""
    rows = []
    for name in TEST_SETS:
        files = layout.generation_files(out_dir, name)
        for r in read_jsonl(files[0])[:per_set] if files else []:
            rows.append({"set": name, "seed": r["seed"], "instruction": r["instruction"], "input": r["input"],
                         "reference": r["references"][0], "prediction": r["prediction"],
                         "rougeL": round(r["rougeL"], 1)})
    return pd.DataFrame(rows)


def run_training(cfg: CellConfig) -> dict:
    """``train_cell`` in this process, or, when ``training.processes`` > 1, in that many data-parallel processes
    (``accelerate launch --multi_gpu`` on a GPU machine, ``torchrun`` on a CPU; ``accelerate.Accelerator`` sets up
    the process group from either). The cell's settings travel in ``out_dir/cell_config.json``. Returns the
    training summary."""
    settings = cfg.settings
    processes = settings.processes
    if processes == 1:
        return train_cell(cfg)
    config_file = Path(cfg.out_dir) / "cell_config.json"
    write_json(config_file, asdict(cfg))
    if on_gpu():
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision",
                   settings.mixed_precision(True)]
    else:  # accelerate launches several CPU processes only through MPI; torchrun's environment serves Accelerator
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command += ["-m", "repro.cells", "train", str(config_file)]
    subprocess.run(command, check=True)
    return read_json(layout.train_summary_file(cfg.out_dir))


def main(argv: list[str] | None = None) -> None:
    """``python -m repro.cells {train,evaluate} CELL_CONFIG_JSON``: one step of a cell, as the launcher runs it."""
    parser = argparse.ArgumentParser(prog="python -m repro.cells", description=main.__doc__)
    parser.add_argument("step", choices=["train", "evaluate"])
    parser.add_argument("cell_config", help="JSON file with the fields of repro.cells.CellConfig")
    args = parser.parse_args(argv)
    cfg = CellConfig.from_parameters(read_json(args.cell_config))
    (train_cell if args.step == "train" else evaluate_cell)(cfg)


if __name__ == "__main__":
    main()
