"""The layout of a run's folder, in one place: every path a training run writes or another step reads is built here.

A run (one table cell trained with one training seed) owns ``<results>/runs/<pair>/<cell>/seed<seed>/``:

    model/ or adapter/      the best checkpoint (LoRA runs: the adapter; ``model/`` then holds the merged model)
    train_summary.json      what training did (best epoch, dev Rouge-L per epoch, warnings); marks a trained run
    train_log.jsonl         every optimiser step and epoch end
    resume/state.pt         the state to resume an interrupted run from (removed when training ends)
    seqkd_train.jsonl       SeqKD's teacher-generated training targets
    generations/<set>_seed<seed>.jsonl   test generations with their Rouge-L, per test set and sampling seed
    scores.json             test Rouge-L per set and seed; written last, it marks an evaluated run
    evaluate_memory.json    the evaluation job's measured memory (repro.memory)
    train.ipynb/.html, evaluate.ipynb/.html, *.params.yaml   the rendered notebooks

``repro.grid`` places the folder (``grid.run_dir``); the rules take their patterns from ``run_pattern``. No other
module spells these names (a test checks it). Torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path

MODEL = "model"
ADAPTER = "adapter"
TRAIN_SUMMARY = "train_summary.json"
TRAIN_LOG = "train_log.jsonl"
RESUME_STATE = "resume/state.pt"
SEQKD_TARGETS = "seqkd_train.jsonl"
GENERATIONS = "generations"
SCORES = "scores.json"
EVALUATION_MEMORY = "evaluate_memory.json"

Folder = str | os.PathLike


def run_dir(results: Folder, pair: str, cell: str, seed: int | str) -> Path:
    """The folder of run ``pair``/``cell`` with training seed ``seed``."""
    return Path(results) / "runs" / pair / cell / f"seed{seed}"


def run_pattern(results: Folder) -> str:
    """The run folder as a Snakemake pattern with the wildcards ``{pair}``, ``{cell}`` and ``{seed}``."""
    return str(run_dir(results, "{pair}", "{cell}", "{seed}"))


def model_dir(run: Folder) -> Path:
    return Path(run) / MODEL


def adapter_dir(run: Folder) -> Path:
    return Path(run) / ADAPTER


def train_summary_file(run: Folder) -> Path:
    return Path(run) / TRAIN_SUMMARY


def train_log_file(run: Folder) -> Path:
    return Path(run) / TRAIN_LOG


def resume_state_file(run: Folder) -> Path:
    return Path(run) / RESUME_STATE


def seqkd_targets_file(run: Folder) -> Path:
    return Path(run) / SEQKD_TARGETS


def generations_dir(run: Folder) -> Path:
    return Path(run) / GENERATIONS


def generation_name(test_set: str, seed: int | str) -> str:
    """The file name of the generations on ``test_set`` with sampling seed ``seed`` (in a generations folder)."""
    return f"{test_set}_seed{seed}.jsonl"


def generation_file(run: Folder, test_set: str, seed: int | str) -> Path:
    """The generations of a run on ``test_set`` with sampling seed ``seed``."""
    return generations_dir(run) / generation_name(test_set, seed)


def generation_files(run: Folder, test_set: str) -> list[Path]:
    """The generation files of a run on ``test_set`` that exist, by sampling seed."""
    found = generations_dir(run).glob(f"{test_set}_seed*.jsonl")
    return sorted(found, key=lambda path: int(path.stem.rpartition("_seed")[2]))


def scores_file(run: Folder) -> Path:
    return Path(run) / SCORES


def evaluation_memory_file(run: Folder) -> Path:
    """What the evaluation job measured of its own memory (``repro.memory``): beside the scores, not in them, so
    that the scores of a run are the same bytes whenever it is evaluated."""
    return Path(run) / EVALUATION_MEMORY


def notebook_file(run: Folder, kind: str, suffix: str = ".ipynb") -> Path:
    """The rendered ``kind`` notebook (``train`` or ``evaluate``) of a run, as .ipynb or (``suffix``) .html."""
    return Path(run) / f"{kind}{suffix}"
