"""Estimated GPU time and peak GPU memory of every job of a configuration, before anything runs (no torch import:
the Snakefile uses this for the cluster runtime it requests and for its memory check before a run).

    python -m repro.estimate config/paper.yaml [--peak-tflops 312 --train-mfu 0.35 --generate-mfu 0.10]

A model given by ``id`` is counted from its own config.json (a local folder's, or the hub's when reachable or
cached); offline, the config's published ``models.<name>.architecture`` stands in, else a stated guess with a
warning, so an unknown model never stops the workflow.

Time is a FLOP count divided by a sustained rate. The FLOPs are the matrix products a job computes
(``train_flops``): a trained body 3x its forward (forward, input and weight gradients; with LoRA the frozen weights
take no weight gradient), its attention over each sequence's positions, the output head on the response positions
only (where every loss reads it), a live frozen teacher's forward, or, read from the teacher-state cache
(``training.teacher_cache``), only its head; DSKD's projections and its extra passes through both heads (the
projected teacher through the student's head, the projected student through the teacher's, with their gradients),
DSKD-CMA's attention between the two sequences; and one cache job per pair (the teacher's forward over the training
set, and DSKD-CMA's official statistics over every example padded to max_length). Tokens per example and the
response share come from the training data when it is there (``data_stats``: tokenised with the model's own
tokenizer, or, without a readable tokenizer, by characters per token measured on Dolly), else Dolly's measured
means. The dev evaluation after every epoch and the test evaluation cost the body over prompt and sampled tokens and
the head per sampled token, at a lower utilisation (sampling is memory-bound). Defaults: an A100's 312 bf16 TFLOP/s
at 35% for training and 10% for generation. It is a planning number, within a factor of about two; measured times
are recorded per job by Snakemake's ``benchmark:`` files under ``results/benchmarks/``.

Memory is ``repro.memory``'s model of each job's peak on a GPU (``job_memory``): weights, gradients, AdamW state,
activations at the micro batch and the data's longest sequences (max_length without data), the loss's
vocabulary-sized buffers, the teacher parts it holds, LoRA; the table names the smallest common GPU (24, 40, 80,
141 GB) each job fits. With ``gpu_memory_gb`` in the config (a profile's ``config:`` or ``--config
gpu_memory_gb=80``), a job that cannot fit stops the workflow before any job starts (``memory_problems``).
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import hf_hub_download
from tokenizers import Tokenizer

from . import architecture, grid, memory, names
from .config import local_file, tokenizer_ids
from .memory import Batch, Dims, Sampling
from .rows import processed_files, read_examples, references
from .settings import TrainSettings, merges_lora, training_value
from .validation import load_config

# What the estimate assumes for a model whose config.json cannot be read and whose config gives no architecture
# (LLaMA-shaped, about 1.1B parameters); a warning says so.
FALLBACK_FIELDS = architecture.hf_fields({"arch": "llama", "layers": 22, "hidden": 2048, "heads": 32,
                                          "intermediate": 5632, "max_positions": 2048}, 32000)
# Data sizes of the paper's data when they cannot be read from the data (PAPER.md section 4).
PAPER_TRAIN_EXAMPLES = 11_400
PAPER_TEST_EXAMPLES = {"dolly": 500, "selfinst": 242, "vicuna": 80, "sni": 1694, "unni": 10_000}
PROMPT_TOKENS = {"synthetic": 30, "real": 120}  # prompt only, generation
# Measured on the 1,000 rows of Dolly's dev set (../shared/data/minillm/dolly/dev.jsonl; max_length 512,
# max_prompt_length 256) with each family's real tokenizer: mean positions per example, the response share of them,
# the mean squared positions (the attention's pairs) and characters per token. The real data's numbers where it is
# absent, and its characters per token where it is there but the tokenizer cannot be read; other families: GPT-2's.
DOLLY = {"gpt2": (146.1, 0.519, 33_262, 4.54), "llama": (166.1, 0.512, 41_656, 3.91),
         "mistral": (160.6, 0.514, 39_469, 4.06), "qwen2": (141.7, 0.538, 31_426, 4.65)}
SYNTHETIC = (60.0, 0.5, 3_600, 4.0)  # the miniature's generated rows before they exist


@dataclass(frozen=True)
class Rates:
    peak_tflops: float = 312.0
    train_mfu: float = 0.35
    generate_mfu: float = 0.10


def hf_config(config: dict, model: str) -> dict | None:
    """The ``transformers`` config fields of a config model: a hub or local model's own config.json where it can be
    read, else its published ``architecture``; a built model's from its description (embedding rows: its
    ``vocab_size``, else its tokenizer's, padded as the builder pads them). None when nothing says."""
    spec = config["models"][model]
    if "id" in spec:
        found = model_config(spec["id"])
        if found is not None:
            return found
        return architecture.published_fields(spec["architecture"]) if "architecture" in spec else None
    tokenizer = config["tokenizers"][spec["tokenizer"]]
    rows = spec.get("vocab_size") or tokenizer.get("vocab_size") or tokenizer_ids(tokenizer["id"], ".")
    if rows is None:
        return None
    multiple = spec.get("pad_vocab_to_multiple_of")
    rows = -(-rows // multiple) * multiple if multiple and "vocab_size" not in spec else rows
    return architecture.hf_fields(spec, rows)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


@functools.lru_cache(maxsize=None)
def _read_model_config(ref: str) -> str | None:
    path = Path(ref).expanduser()
    if path.is_dir():
        return (path / "config.json").read_text(encoding="utf-8") if (path / "config.json").is_file() else None
    try:  # the hub's file (or its local cache; HF_HUB_OFFLINE=1 asks the cache only)
        return Path(hf_hub_download(ref, "config.json")).read_text(encoding="utf-8")
    except Exception:  # unreachable, unknown or gated: the caller falls back and says so
        return None


def model_config(ref: str) -> dict | None:
    """The config.json of a model given by local folder or hub id, or None when it cannot be read."""
    text = _read_model_config(ref)
    try:
        return json.loads(text) if text is not None else None
    except json.JSONDecodeError:
        return None


def shape_from_config(c: dict) -> tuple[float, int, int] | None:
    """(parameters, hidden size, head rows) counted from a ``transformers`` config.json (``repro.memory.Dims``):
    exact for GPT-2 and for the LLaMA family (LLaMA, Mistral, Qwen2 and others with its field names); None when the
    fields are missing."""
    try:
        d = Dims.from_fields(c)
    except (KeyError, TypeError):
        return None
    return float(d.parameters), d.hidden, d.rows


FALLBACK_SHAPE = shape_from_config(FALLBACK_FIELDS)


def dims(config: dict, model: str) -> Dims:
    """The sizes of a config model (``repro.memory.Dims``) from its ``hf_config``, else ``FALLBACK_FIELDS`` with a
    warning."""
    fields = hf_config(config, model)
    if fields is not None and shape_from_config(fields) is not None:
        return Dims.from_fields(fields)
    _warn_once(f"config key 'models.{model}.id': no config.json readable for {config['models'][model].get('id')!r} "
               f"(not a local model folder, and the hub is offline or does not know it) and no "
               f"models.{model}.architecture given; the estimate assumes {FALLBACK_SHAPE[0]:.0e} parameters, hidden "
               f"size {FALLBACK_SHAPE[1]} and {FALLBACK_SHAPE[2]:,} head rows")
    return Dims.from_fields(FALLBACK_FIELDS)


def _shape(config: dict, model: str) -> tuple[float, int, int]:
    """(parameters, hidden size, head rows) of a config model (``dims``)."""
    d = dims(config, model)
    return float(d.parameters), d.hidden, d.rows


def parameters(config: dict, model: str) -> float:
    """Parameter count of a config model."""
    return _shape(config, model)[0]


def head_flops(config: dict, model: str) -> float:
    """FLOPs of one token through a model's output head (2 d V)."""
    _, hidden, vocab = _shape(config, model)
    return 2 * hidden * vocab


# ---------------------------------------------------------------------------------------------------------------
# The data: tokens per example


@dataclass(frozen=True)
class DataStats:
    """What the estimate reads of a training set in one model's tokenisation (``repro.data.encode_example``: no
    BOS, the prompt cut to max_prompt_length, the response and EOS, the whole to max_length): ``examples``, mean
    ``tokens`` (input positions) and ``rows`` (response positions) per example, mean ``squares`` (positions
    squared: the attention's pairs), the ``longest`` example's positions and the most response ``longest_rows`` of
    one, and ``source`` (how they were found, for the printed table)."""
    examples: int
    tokens: float
    rows: float
    squares: float
    longest: int
    longest_rows: int
    source: str

    @property
    def share(self) -> float:
        return self.rows / self.tokens


def train_file(config: dict) -> Path | None:
    """The training set the cells will read: the workflow's ``data/train.jsonl`` when it exists, else (processed
    data) the source file it is imported from; None when neither is there yet."""
    prepared = grid.data_dir(config) / "train.jsonl"
    if prepared.is_file():
        return prepared
    data = config["data"]
    if data["source"] == "processed":
        source = processed_files(data)["train"]
        return source if source.is_file() else None
    return None


def tokenizer_file(config: dict, model: str) -> Path | None:
    """The tokenizer.json of a config model where it can be read without a download: a model folder's or the hub
    cache's (``id``), a tokenizer folder's or id's, or the workflow's trained miniature tokenizer."""
    spec = config["models"][model]
    if "id" in spec:
        return local_file(spec["id"], "tokenizer.json", ".")
    entry = config["tokenizers"][spec["tokenizer"]]
    if "id" in entry:
        return local_file(entry["id"], "tokenizer.json", ".")
    trained = grid.tokenizer_dir(config, spec["tokenizer"]) / "tokenizer.json"
    return trained if trained.is_file() else None


def data_stats(config: dict, model: str, training: dict) -> DataStats:
    """Tokens per example of the training set in ``model``'s tokenisation at the ``training`` lengths: tokenised
    when the data and the tokenizer can be read, by characters per token (``DOLLY``) when only the data can, else
    Dolly's measured means (the miniature's: ``SYNTHETIC``)."""
    max_length = training_value(training, "max_length")
    max_prompt = training_value(training, "max_prompt_length")
    family = dims(config, model).arch
    tokens, share, squares, chars = (SYNTHETIC if config["data"]["source"] == "synthetic"
                                     else DOLLY.get(family, DOLLY["gpt2"]))
    path = train_file(config)
    if path is None:
        examples = config["data"]["n_train"] if config["data"]["source"] == "synthetic" else PAPER_TRAIN_EXAMPLES
        tokens = min(tokens, max_length)
        return DataStats(examples, tokens, tokens * share, min(squares, max_length ** 2), max_length, max_length - 1,
                         "assumed (no training data yet)")
    tokenizer = tokenizer_file(config, model)
    stat = path.stat()
    return _file_stats(str(path), stat.st_mtime_ns, stat.st_size, str(tokenizer) if tokenizer else None, chars,
                       max_length, max_prompt)


@functools.lru_cache(maxsize=None)
def _file_stats(path: str, mtime: int, size: int, tokenizer: str | None, chars: float, max_length: int,
                max_prompt: int) -> DataStats:
    rows, _ = read_examples(path, skip_malformed=True)
    prompts = [r["prompt"] for r in rows]
    answers = [references(r)[0] for r in rows]
    if tokenizer is not None:
        tok = Tokenizer.from_file(tokenizer)
        prompt_n = [len(e.ids) for e in tok.encode_batch(prompts, add_special_tokens=False)]
        answer_n = [len(e.ids) for e in tok.encode_batch(answers, add_special_tokens=False)]
        source = f"{Path(path).name} tokenised ({Path(tokenizer).parent.name} tokenizer)"
    else:
        prompt_n = [max(1, round(len(p) / chars)) for p in prompts]
        answer_n = [round(len(a) / chars) for a in answers]
        source = f"{Path(path).name} at {chars} characters per token"
    lengths, responses = [], []
    for p, a in zip(prompt_n, answer_n):
        p = min(p, max_prompt)
        sequence = min(p + a + 1, max_length + 1)  # the response's EOS included, cut to max_length + 1
        lengths.append(sequence - 1)
        responses.append(max(sequence - p, 0))
    n = max(len(rows), 1)
    return DataStats(len(rows), sum(lengths) / n, sum(responses) / n, sum(x * x for x in lengths) / n,
                     max(lengths, default=max_length), max(responses, default=max_length - 1), source)


# ---------------------------------------------------------------------------------------------------------------
# FLOPs


@dataclass(frozen=True)
class Work:
    """The positions a training pass computes: ``tokens`` (padded positions), ``squares`` (each sequence's
    positions squared, summed: its attention's pairs) and the student's response ``rows``; for a cross-vocabulary
    pair the same in the teacher's tokenisation; ``aligned``: MinED's rows aligned one-to-one (default: all)."""
    tokens: float
    squares: float
    rows: float
    teacher_tokens: float | None = None
    teacher_squares: float | None = None
    teacher_rows: float | None = None
    aligned: float | None = None

    def teacher(self) -> tuple[float, float, float]:
        return (self.teacher_tokens if self.teacher_tokens is not None else self.tokens,
                self.teacher_squares if self.teacher_squares is not None else self.squares,
                self.teacher_rows if self.teacher_rows is not None else self.rows)


def _matmul(m: Dims) -> int:
    """Weights of one layer's matrix products (biases excluded: they are no product)."""
    d, inner = m.hidden, m.intermediate
    if m.gpt2:
        return 4 * d * d + 2 * d * inner
    return d * m.attention_width + 2 * d * m.kv_width + m.attention_width * d + 3 * d * inner


def forward_flops(m: Dims, tokens: float, squares: float) -> float:
    """FLOPs of ``m``'s body (no head) forward over ``tokens`` positions whose sequences' squared lengths sum to
    ``squares``: 2 per weight and position, and the attention's two products (4 x width per pair of positions)."""
    return m.layers * (2 * _matmul(m) * tokens + 4 * m.attention_width * squares)


def train_flops(student: Dims, work: Work, method: str = "sft", teacher: Dims | None = None,
                lora: tuple[int, list[str]] | None = None, cached: bool = False, student_ids: int | None = None,
                teacher_ids: int | None = None) -> dict[str, float]:
    """FLOPs (matrix products, forward and backward) of one training pass of ``method`` over ``work``, by part.

    The student's body: forward, input gradients and weight gradients (3x the forward; LoRA: no weight gradient
    of the frozen base and no input gradient into the frozen embeddings, plus its adapters' products); its head on
    the response rows (6 d V; LoRA 4 d V), cut to the tokenizer's ids. The teacher (``needs_teacher`` and not black
    box): its body's forward unless ``cached``; its head where the method reads it (KD: 2 d_t V per row; ULD and
    DSKD-CMA span all its head rows; MinED the aligned rows). DSKD (PAPER.md section 2): the projection
    ``P_t2s`` (forward and weight gradient) and the projected teacher through the student's head, its logits and
    the gradient's product with the head in the same pass (4 d_s V per row); the teacher space (not in the
    student-space ablation): ``P_s2t`` (forward, weight and input gradients) and the projected student through the
    teacher's head beside the teacher's own logits and the gradient (6 d_t V per row). DSKD-CMA: its three
    projections over every position, the attention between the two sequences (scores, both softmax products and
    their gradients), the student-space head pass (4 d_s V per student row) and the teacher-space one (6 d_t V per
    teacher row, all head rows)."""
    traits = names.method(method)
    d_s = student.hidden
    vocab = student_ids or student.rows
    forward = forward_flops(student, work.tokens, work.squares)
    out = {}
    if lora:
        rank, modules = lora
        found = student._lora_modules(modules)
        adapters = sum(2 * rank * (i + o) * n for i, o, n in found)
        # layer 0's attention projections and adapters read the frozen embeddings: no input gradient there
        first = 2 * d_s * (3 * d_s if student.gpt2 else student.attention_width + 2 * student.kv_width)
        first += sum(2 * rank * i * n for i, _, n in found)
        attention = 4 * student.attention_width * work.squares * student.layers
        if not student.gpt2 and "k_proj" not in modules:  # layer 0's keys take no gradient either
            attention -= 2 * student.attention_width * work.squares
        # forward and input gradients, the attention's two gradient products, the adapters' forward and gradients
        out["student body"] = 2 * forward + attention + 3 * adapters * work.tokens * student.layers \
            - first * work.tokens
        out["student head"] = 4 * work.rows * d_s * vocab
    else:
        out["student body"] = 3 * forward
        out["student head"] = 6 * work.rows * d_s * vocab
    if teacher is None or not traits.needs_teacher or traits.black_box:
        return out
    d_t = teacher.hidden
    t_tokens, t_squares, t_rows = work.teacher()
    t_vocab = teacher_ids or teacher.rows
    if not cached:
        out["teacher body"] = forward_flops(teacher, t_tokens, t_squares)
    if method == "kd":
        out["teacher head"] = 2 * work.rows * d_t * vocab
    elif method == "uld":
        out["teacher head"] = 2 * t_rows * d_t * teacher.rows
    elif method == "mined":
        out["teacher head"] = 2 * (work.aligned if work.aligned is not None else work.rows) * d_t * t_vocab
    elif method in ("dskd", "dskd_student_space"):
        rows = work.rows
        out["projections"] = 4 * rows * d_t * d_s
        out["student-space head pass"] = 4 * rows * d_s * vocab
        if method == "dskd":
            out["projections"] += 6 * rows * d_s * d_t
            out["teacher-space head pass"] = 6 * rows * d_t * vocab
    elif method == "dskd_cma":
        out["projections"] = 16 * work.tokens * d_s * d_t + 4 * t_tokens * d_t * d_s + 6 * work.tokens * d_s * d_t
        pairs = math.sqrt(work.squares * t_squares)  # sum over sequences of L_s x L_t (equal lengths: exact)
        out["cross-model attention"] = pairs * (8 * d_t + 6 * d_s + 6 * d_t)
        out["student-space head pass"] = 4 * work.rows * d_s * vocab
        out["teacher-space head pass"] = 6 * t_rows * d_t * teacher.rows
    return out


def generation_flops(m: Dims, prompts: float, prompt: float, new: float) -> float:
    """FLOPs of sampling ``new`` tokens after ``prompt`` prompt tokens for each of ``prompts`` prompts: the body over
    every position (the KV cache spares the recomputation; each new token attends to the positions before it), the
    head at the last prompt position and every sampled one."""
    positions = prompt + new
    attention = 4 * m.attention_width * m.layers * (positions ** 2 - prompt ** 2) / 2
    body = forward_flops(m, positions, prompt ** 2) + attention
    return prompts * (body + 2 * m.hidden * m.rows * (new + 1))


def _data(config: dict) -> tuple[int, int, dict[str, int], str]:
    data = config["data"]
    if data["source"] == "synthetic":
        return data["n_train"], data["n_dev"], dict(data["n_test"]), "synthetic"
    hub = data.get("hub", {})
    tests = {**PAPER_TEST_EXAMPLES, **data.get("limits", {})}
    return PAPER_TRAIN_EXAMPLES, hub.get("dev_size", 1000), {t: tests[t] for t in names.TEST_SETS}, "real"


def _lora(training: dict) -> tuple[int, list[str]] | None:
    spec = training.get("lora")
    return (spec["rank"], list(spec["target_modules"])) if spec else None


def _ids(config: dict, model: str) -> int | None:
    """The tokenizer's ids of a config model where they can be read (the logits are cut to them)."""
    path = tokenizer_file(config, model)
    return _file_ids(str(path), path.stat().st_mtime_ns) if path is not None else None


@functools.lru_cache(maxsize=None)
def _file_ids(path: str, mtime: int) -> int | None:
    """(Read once per file version: the workflow asks for every job while it plans.)"""
    return tokenizer_ids(str(Path(path).parent), ".")


def cell_work(config: dict, cell: grid.Cell) -> tuple[Work, DataStats]:
    """The positions of one epoch of ``cell``'s training (``Work``) and the data statistics they come from."""
    pair = config["pairs"][cell.pair]
    training = grid.cell_training(config, cell)
    stats = data_stats(config, pair[cell.role], training)
    n = stats.examples
    work = Work(n * stats.tokens, n * stats.squares, n * stats.rows)
    if cell.needs_teacher and names.method(cell.method).cross_vocab:
        t = data_stats(config, pair["teacher"], training)
        work = Work(work.tokens, work.squares, work.rows, n * t.tokens, n * t.squares, n * t.rows)
    return work, stats


def job_flops(config: dict, cell: grid.Cell) -> dict[str, float]:
    """FLOPs of a cell's training job: ``train`` (the steps, over every epoch), ``dev`` (the dev sampling after each
    epoch, and SeqKD's teacher sampling) and ``evaluate`` (the test sampling)."""
    pair = config["pairs"][cell.pair]
    training = grid.cell_training(config, cell)
    _, n_dev, n_test, kind = _data(config)
    student = dims(config, pair[cell.role])
    teacher = dims(config, pair["teacher"]) if cell.needs_teacher else None
    work, stats = cell_work(config, cell)
    parts = train_flops(student, work, cell.method, teacher, _lora(training), grid.uses_teacher_states(config, cell),
                        _ids(config, pair[cell.role]), _ids(config, pair["teacher"]) if teacher else None)
    generated = 0.5 * config["evaluation"]["max_new_tokens"]  # samples stop at EOS; about half the limit
    dev_seeds = len(config["evaluation"]["dev_seeds"]) + len(training_value(config["evaluation"], "dev_check_seeds"))
    epochs = training["epochs"]
    dev = generation_flops(student, n_dev * dev_seeds * epochs, PROMPT_TOKENS[kind], generated)
    if cell.method == "seqkd":  # the teacher answers every training prompt once (sampling)
        dev += generation_flops(teacher, stats.examples, PROMPT_TOKENS[kind], generated)
    test = generation_flops(student, sum(n_test.values()) * len(config["evaluation"]["seeds"]), PROMPT_TOKENS[kind],
                            generated)
    return {"train": sum(parts.values()) * epochs, "dev": dev, "evaluate": test}


def job_seconds(config: dict, cell: grid.Cell, rates: Rates = Rates()) -> dict[str, float]:
    """Estimated GPU-seconds of a cell's training job (``train``: training and the dev evaluations) and of its
    test evaluation (``evaluate``), summed over its processes."""
    flops = job_flops(config, cell)
    train_rate = rates.peak_tflops * 1e12 * rates.train_mfu
    generate_rate = rates.peak_tflops * 1e12 * rates.generate_mfu
    return {"train": flops["train"] / train_rate + flops["dev"] / generate_rate,
            "evaluate": flops["evaluate"] / generate_rate}


def cache_flops(config: dict, pair: str) -> float:
    """FLOPs of a pair's teacher-state cache job: the teacher's forward over the training set and, for DSKD-CMA's
    official statistics, over every example padded to max_length."""
    entry = grid.teacher_state_pairs(config)[pair]
    teacher_name = config["pairs"][pair]["teacher"]
    teacher = dims(config, teacher_name)
    stats = data_stats(config, teacher_name, entry["training"])
    flops = forward_flops(teacher, stats.examples * stats.tokens, stats.examples * stats.squares)
    if entry["cma"] and training_value(entry["training"], "cma_normalisation") == "official":
        length = entry["training"]["max_length"]
        flops += forward_flops(teacher, stats.examples * length, stats.examples * length ** 2)
    return flops


def cache_seconds(config: dict, pair: str, rates: Rates = Rates()) -> float:
    """Estimated GPU-seconds of a pair's teacher-state cache job (``repro.teacher_states``)."""
    return cache_flops(config, pair) / (rates.peak_tflops * 1e12 * rates.train_mfu)


def cache_minutes(config: dict, pair: str, margin: float = 1.5, floor: int = 10) -> int:
    """Wall-clock minutes to request for a pair's cache job: the estimate with ``margin``, at least ``floor``."""
    return max(floor, math.ceil(cache_seconds(config, pair) * margin / 60))


def job_minutes(config: dict, cell: grid.Cell, step: str, margin: float = 1.5, floor: int = 10) -> int:
    """Wall-clock minutes to request for a job (``step``: ``train`` or ``evaluate``): the estimate over the job's
    GPUs, with ``margin``, at least ``floor``."""
    gpus = training_value(grid.cell_training(config, cell), "processes") if step == "train" else 1
    return max(floor, math.ceil(job_seconds(config, cell)[step] / gpus * margin / 60))


# ---------------------------------------------------------------------------------------------------------------
# Memory


def _bf16(training: dict, device: str) -> bool:
    precision = training_value(training, "precision")
    return precision == "bf16" or (precision == "auto" and device == "gpu")


def _saved_bytes(training: dict, device: str) -> int:
    """Bytes per weight of the checkpoint a run with ``training`` saves (``TrainSettings.saved_dtype``: its
    ``checkpoint_dtype``, by default the dtype the precision holds frozen weights in on ``device``)."""
    return 2 if TrainSettings(**training).saved_dtype(device == "gpu") == "bfloat16" else 4


def _teacher_saved_bytes(config: dict, pair: str, device: str) -> int:
    """Bytes per weight of a pair's trained teacher checkpoint (its full fine-tune, or its merged LoRA)."""
    teacher = grid.teacher_run(config, grid.Cell(pair, "sft", role="teacher"))
    return _saved_bytes(grid.cell_training(config, teacher), device)


def _sampling(config: dict, training: dict) -> Sampling:
    """The worst sampling batch of a job: the evaluation batch of prompts at max_prompt_length."""
    evaluation = config["evaluation"]
    return Sampling(evaluation["batch_size"], training_value(training, "max_prompt_length"),
                    evaluation["max_new_tokens"])


def job_memory(config: dict, cell: grid.Cell, step: str, device: str = "gpu",
               precision_device: str | None = None) -> memory.Prediction:
    """The predicted peak memory of a cell's ``train`` or ``evaluate`` job per process (``repro.memory``), at its
    largest micro batch: ``micro_batch_size`` sequences as long as the data's longest example (max_length without
    data), each with the data's most response positions; in the dtypes the precision gives on ``precision_device``
    (default: ``device``; precision ``auto`` is bf16 on a GPU)."""
    pair = config["pairs"][cell.pair]
    training = grid.cell_training(config, cell)
    student_name = pair[cell.role]
    student = dims(config, student_name)
    bf16 = _bf16(training, precision_device or device)
    if step == "evaluate":
        # a LoRA student's model is its adapter, merged on loading into its base (stored in the config's dtype)
        adapter = _lora(training) is not None and not merges_lora(cell.role)
        stored = memory.dtype_bytes(bf16) if adapter else _saved_bytes(training, precision_device or device)
        return memory.evaluate_peak(student, _sampling(config, training), bf16, device, stored, adapter=adapter)
    micro = training_value(training, "micro_batch_size")
    stats = data_stats(config, student_name, training)
    traits = names.method(cell.method)
    teacher = dims(config, pair["teacher"]) if cell.needs_teacher else None
    t_length = t_rows = None
    if teacher is not None and traits.cross_vocab:
        t_stats = data_stats(config, pair["teacher"], training)
        t_length, t_rows = t_stats.longest, micro * t_stats.longest_rows
    batch = Batch(micro, stats.longest, micro * stats.longest_rows, t_length, t_rows, stats.longest_rows)
    processes = training_value(training, "processes")
    accumulation = training_value(training, "batch_size") // (micro * processes)
    job = memory.TrainJob(student, batch, cell.method, teacher, _lora(training), bf16, accumulation, processes,
                          training_value(training, "shard_optimizer"), grid.uses_teacher_states(config, cell),
                          _ids(config, student_name), _ids(config, pair["teacher"]) if teacher else None,
                          _sampling(config, training), _sampling(config, training) if cell.method == "seqkd" else None,
                          stored_bytes=memory.dtype_bytes(bf16), merge=merges_lora(cell.role),
                          teacher_stored_bytes=_teacher_saved_bytes(config, cell.pair, precision_device or device)
                          if teacher else None)
    return memory.train_peak(job, device)


def cache_memory(config: dict, pair: str, device: str = "gpu", precision_device: str | None = None) \
        -> memory.Prediction:
    """The predicted peak memory of a pair's teacher-state cache job (``precision_device`` as in ``job_memory``)."""
    entry = grid.teacher_state_pairs(config)[pair]
    training = entry["training"]
    name = config["pairs"][pair]["teacher"]
    stats = data_stats(config, name, training)
    micro = training_value(training, "micro_batch_size")
    official = entry["cma"] and training_value(training, "cma_normalisation") == "official"
    bf16 = _bf16(training, precision_device or device)
    return memory.cache_peak(dims(config, name), Batch(micro, stats.longest, micro * stats.longest_rows),
                             stats.examples, round(stats.examples * stats.rows), bf16, device,
                             training_value(training, "max_length") if official else None,
                             _teacher_saved_bytes(config, pair, precision_device or device))


def job_host_mb(config: dict, cell: grid.Cell, step: str, gpu: bool) -> int:
    """``mem_mb`` of a cell's ``train`` or ``evaluate`` job on a cluster (``repro.memory.host_mb``): on a GPU node
    (``gpu``) what the host holds of the job's CPU model (loading, the LoRA merge, ...) and the CUDA runtime; on a
    CPU node the job's CPU prediction; each with the process's baseline and a margin, times its processes."""
    processes = training_value(grid.cell_training(config, cell), "processes") if step == "train" else 1
    where = "gpu" if gpu else "cpu"
    return memory.host_mb(job_memory(config, cell, step, device="cpu", precision_device=where), gpu, processes)


def cache_host_mb(config: dict, pair: str, gpu: bool) -> int:
    """``mem_mb`` of a pair's teacher-state cache job (as ``job_host_mb``)."""
    return memory.host_mb(cache_memory(config, pair, device="cpu", precision_device="gpu" if gpu else "cpu"), gpu)


def memory_problems(config: dict) -> list[str]:
    """With ``gpu_memory_gb`` in the config, one line per job whose predicted peak GPU memory exceeds it (the job,
    the prediction and the limit); none without the key."""
    limit = config.get("gpu_memory_gb")
    if limit is None:
        return []
    return [f"job {r['cell']} ({r['step']}): predicted peak GPU memory {r['memory_gb']:.3g} GB exceeds "
            f"gpu_memory_gb {limit:g}" for r in estimate(config) if r["memory_gb"] > limit]


def estimate(config: dict, rates: Rates = Rates()) -> list[dict]:
    """One row per job: run (or ``{pair}/teacher_states``), step (``train``, ``evaluate``, ``cache``), estimated
    GPU-hours, the minutes a cluster job would request, its predicted peak GPU memory (``memory_gb``, with its
    phase and largest components in ``memory``), the smallest common GPU it fits (``fits``, GB, or None) and the
    host memory it asks of a GPU node (``host_gb``: its ``mem_mb``)."""
    rows = []

    def row(cell: str, step: str, seconds: float, minutes: int, peak: memory.Prediction, host_mb: int) -> dict:
        return {"cell": cell, "step": step, "gpu_hours": seconds / 3600, "request_minutes": minutes,
                "memory_gb": peak.gb, "fits": peak.smallest_gpu(), "memory": memory.describe(peak),
                "host_gb": host_mb / 1e3}

    for pair in grid.teacher_state_pairs(config):
        rows.append(row(f"{pair}/teacher_states", "cache", cache_seconds(config, pair, rates),
                        cache_minutes(config, pair), cache_memory(config, pair), cache_host_mb(config, pair, True)))
    for run in grid.runs(config):
        seconds = job_seconds(config, run, rates)
        for step in ("train", "evaluate"):
            rows.append(row(run.run_id, step, seconds[step], job_minutes(config, run, step),
                            job_memory(config, run, step), job_host_mb(config, run, step, True)))
    return rows


def without_teacher_cache(config: dict) -> dict:
    """A copy of ``config`` with ``training.teacher_cache`` off (every cell runs its teacher live)."""
    other = copy.deepcopy(config)
    other["training"]["teacher_cache"] = False
    for pair in other["pairs"].values():
        pair.get("student_training", {}).pop("teacher_cache", None)
    return other


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.estimate",
                                     description="Estimated GPU-hours, peak GPU memory and host memory (a "
                                                 "cluster job's mem_mb) of every job of a configuration.")
    parser.add_argument("config", help="workflow configuration YAML, e.g. config/paper.yaml")
    parser.add_argument("--peak-tflops", type=float, default=Rates.peak_tflops, help="GPU peak bf16 TFLOP/s")
    parser.add_argument("--train-mfu", type=float, default=Rates.train_mfu, help="sustained share when training")
    parser.add_argument("--generate-mfu", type=float, default=Rates.generate_mfu, help="... when sampling")
    parser.add_argument("--components", action="store_true", help="print each job's largest memory components")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    rates = Rates(args.peak_tflops, args.train_mfu, args.generate_mfu)
    for pair, spec in config["pairs"].items():
        stats = data_stats(config, spec["student"], grid.cell_training(config, grid.Cell(pair, "sft")))
        print(f"tokens per example ({pair} student): {stats.tokens:.1f}, response share {stats.share:.2f}, "
              f"{stats.examples:,} examples: {stats.source}")
    rows = estimate(config, rates)
    width = max(len(r["cell"]) for r in rows)
    print(f"{'cell':{width}}  {'job':8}  {'GPU-hours':>9}  {'requested minutes':>17}  {'peak GB':>7}  {'fits':>6}  "
          f"{'host GB':>7}")
    for r in rows:
        fits = f"{r['fits']} GB" if r["fits"] else "none"
        print(f"{r['cell']:{width}}  {r['step']:8}  {r['gpu_hours']:9.2f}  {r['request_minutes']:17d}  "
              f"{r['memory_gb']:7.1f}  {fits:>6}  {r['host_gb']:7.1f}" + (f"  {r['memory']}" if args.components
                                                                         else ""))
    total = sum(r["gpu_hours"] for r in rows)
    print(f"{'total':{width}}  {'':8}  {total:9.1f}")
    live = sum(r["gpu_hours"] for r in estimate(without_teacher_cache(config), rates))
    print(f"{'without the teacher-state cache':{width}}  {'':8}  {live:9.1f}  ({total / live:.2f}x with it)")
    for problem in memory_problems(config):
        print(problem)


if __name__ == "__main__":
    main()
