"""The layout of the results folder and of a run's folder, in one place: every path a step writes or another step
reads is spelled here.

The results folder (the config's ``results_dir``; ``repro.grid`` places it and chooses what is in it) holds:

    data/                   the splits (``repro.rows``' layout) and the pretraining corpus
    tokenizers/<name>/      miniature tokenizers
    models/base/<name>/, models/pretrained/<name>/   built base models, before and after pretraining
    teacher_states/<pair>/states.pt, states.json     a pair's teacher-state cache and its record
    runs/...                the runs (below)
    tables/                 table{n}.{md,tex,csv}, claims.{md,csv}
    figures/                each figure's .png and .pdf; training/<pair>/<row>.png, the training curves
    analysis/               the numbers behind the figures
    report/index.html       the report

A run (one table cell trained with one training seed) owns ``<results>/runs/<pair>/<cell>/seed<seed>/``:

    model/ or adapter/      the best checkpoint (a LoRA teacher: the adapter, and ``model/`` the merged model; a
                            LoRA student: the adapter, moved to ``model/`` when training ends)
    train_summary.json      what training did (best epoch, dev Rouge-L per epoch, warnings); marks a trained run
    train_log.jsonl         every optimiser step and epoch end
    resume/state.pt         the state to resume an interrupted run from (removed when training ends)
    seqkd_train.jsonl       SeqKD's teacher-generated training targets
    generations/<set>_seed<seed>.jsonl   test generations with their Rouge-L, per test set and sampling seed
    scores.json             test Rouge-L per set and seed; written last, it marks an evaluated run
    evaluate_memory.json    the evaluation job's measured memory (repro.memory)
    train.ipynb/.html, evaluate.ipynb/.html, *.params.yaml   the rendered notebooks

``repro.grid`` places the folder (``grid.run_dir``); the rules take their patterns from ``run_pattern``. No other
module spells these names (a test checks it). Torch-free; imports nothing of the package.
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

# The results folder
DATA = "data"
PRETRAINING_CORPUS = "pretraining_corpus.jsonl"
TOKENIZERS = "tokenizers"
BASE_MODELS = "models/base"
PRETRAINED_MODELS = "models/pretrained"
TEACHER_STATES = "teacher_states"
STATES = "states.pt"
STATES_INFO = "states.json"
TABLES = "tables"
CLAIMS = "claims"
FIGURES = "figures"
TRAINING_CURVES = "training"
ANALYSIS = "analysis"
REPORT = "report/index.html"


def data_dir(results: Folder) -> Path:
    return Path(results) / DATA


def pretraining_corpus_file(results: Folder) -> Path:
    return data_dir(results) / PRETRAINING_CORPUS


def tokenizer_dir(results: Folder, name: str) -> Path:
    return Path(results) / TOKENIZERS / name


def base_model_dir(results: Folder, name: str) -> Path:
    return Path(results) / BASE_MODELS / name


def pretrained_model_dir(results: Folder, name: str) -> Path:
    return Path(results) / PRETRAINED_MODELS / name


def teacher_states_file(results: Folder, pair: str) -> Path:
    """The teacher-state cache of a pair's teacher (``repro.teacher_states``)."""
    return Path(results) / TEACHER_STATES / pair / STATES


def teacher_states_info(states: Folder) -> Path:
    """The record beside a teacher-state cache ``states`` (its size, time, fingerprint and memory)."""
    return Path(states).with_name(STATES_INFO)


def tables_dir(results: Folder) -> Path:
    return Path(results) / TABLES


def table_file(results: Folder, table: int, ext: str) -> Path:
    """``tables/table{n}.{ext}`` (ext: md, tex or csv)."""
    return tables_dir(results) / f"table{table}.{ext}"


def claims_files(results: Folder) -> dict[str, Path]:
    """The claims table as Markdown and CSV (``repro.claims``)."""
    return {ext: tables_dir(results) / f"{CLAIMS}.{ext}" for ext in ("md", "csv")}


def figures_dir(results: Folder) -> Path:
    return Path(results) / FIGURES


def figure_files(results: Folder, stem: str) -> list[Path]:
    """A figure's PNG and PDF."""
    path = figures_dir(results) / stem
    return [path.with_suffix(".png"), path.with_suffix(".pdf")]


def training_curve_file(results: Folder, pair: str, row: str) -> Path:
    """The training curves of a row, every training run of it in one PNG."""
    return figures_dir(results) / TRAINING_CURVES / pair / f"{row}.png"


def analysis_dir(results: Folder) -> Path:
    """Machine-readable results behind the figures (JSON, CSV, Markdown)."""
    return Path(results) / ANALYSIS


def report_file(results: Folder) -> Path:
    return Path(results) / REPORT

# A run's folder


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
