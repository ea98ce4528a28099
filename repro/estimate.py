"""Estimated GPU time of every job of a configuration, before anything runs (no torch import: the Snakefile uses
this for the cluster runtime it requests).

    python -m repro.estimate config/paper.yaml [--peak-tflops 312 --train-mfu 0.35 --generate-mfu 0.10]

A model given by ``id`` is counted from its own config.json (a local folder's, or the hub's when reachable or
cached); offline, the config's optional ``models.<name>.shape`` stands in, else a stated guess with a warning, so an
unknown model never stops the workflow. The estimate is a FLOP count divided by a sustained rate: training costs
6 N FLOPs per token for a fully trained model of N parameters (4 N with LoRA: no weight gradients for the frozen
base), a frozen teacher 2 N per token, or, read from the teacher-state cache (``training.teacher_cache``), only its
head on the response tokens (2 d V per token) plus one cache job per pair (2 N per training token once; DSKD-CMA's
official statistics another 2 N per position of every example padded to max_length); the dev evaluation after
every epoch and the test evaluation cost 2 N per prompt and generated token, at a lower utilisation (sampling is
memory-bound). Defaults: an A100's 312 bf16 TFLOP/s at 35% for training and 10% for generation. It is a planning
number, within a factor of about two; measured times are recorded per job by Snakemake's ``benchmark:`` files under
``results/benchmarks/``.
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

from . import architecture, grid, names
from .config import _tokenizer_ids, load_config
from .settings import training_value

# What the estimate assumes for a model whose config.json cannot be read and whose config gives no `shape`
# (parameters, hidden size, head rows); a warning says so.
FALLBACK_SHAPE = (1.0e9, 2048, 32000)
RESPONSE_SHARE = {"synthetic": 0.5, "real": 0.5}  # share of a training sequence's tokens that are response tokens
# Data sizes of the paper's data when they cannot be read from the config (PAPER.md section 4).
PAPER_TRAIN_EXAMPLES = 11_400
PAPER_TEST_EXAMPLES = {"dolly": 500, "selfinst": 242, "vicuna": 80, "sni": 1694, "unni": 10_000}
TOKENS_PER_EXAMPLE = {"synthetic": 60, "real": 230}  # prompt + response, training
PROMPT_TOKENS = {"synthetic": 30, "real": 120}  # prompt only, generation


@dataclass(frozen=True)
class Rates:
    peak_tflops: float = 312.0
    train_mfu: float = 0.35
    generate_mfu: float = 0.10


def _shape(config: dict, model: str) -> tuple[float, int, int]:
    """(parameters, hidden size, head rows) of a config model: for an ``id``, counted from the model's own
    config.json (a local folder's, or the hub's when it is reachable or cached), else from the config's published
    ``architecture``, else ``FALLBACK_SHAPE`` with a warning; for a built model, from its description."""
    spec = config["models"][model]
    counted = shape_from_config(hf_config(config, model) or {})
    if counted is not None:
        return counted
    _warn_once(f"config key 'models.{model}.id': no config.json readable for {spec['id']!r} (not a local "
               f"model folder, and the hub is offline or does not know it) and no models.{model}.architecture "
               f"given; the estimate assumes {FALLBACK_SHAPE[0]:.0e} parameters, hidden size {FALLBACK_SHAPE[1]} and "
               f"{FALLBACK_SHAPE[2]:,} head rows")
    return FALLBACK_SHAPE


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
    rows = spec.get("vocab_size") or tokenizer.get("vocab_size") or _tokenizer_ids(tokenizer["id"], ".")
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
    """(parameters, hidden size, head rows) counted from a ``transformers`` config.json: exact for GPT-2 and for
    the LLaMA family (LLaMA, Mistral, Qwen2 and others with its field names); None when the fields are missing."""
    try:
        if c.get("model_type") == "gpt2":
            d, layers, vocab, positions = c["n_embd"], c["n_layer"], c["vocab_size"], c["n_positions"]
            inner = c.get("n_inner") or 4 * d
            block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
            return float(vocab * d + positions * d + layers * block + 2 * d), d, vocab
        d, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
        heads, inner = c["num_attention_heads"], c["intermediate_size"]
        kv = c.get("num_key_value_heads") or heads
        head_dim = c.get("head_dim") or d // heads
        qkv_bias = c.get("model_type") == "qwen2" or bool(c.get("attention_bias"))
        attention = d * heads * head_dim + 2 * d * kv * head_dim + heads * head_dim * d
        attention += (heads * head_dim + 2 * kv * head_dim) * qkv_bias + d * bool(c.get("attention_bias"))
        mlp = 3 * d * inner + (2 * inner + d) * bool(c.get("mlp_bias"))
        head = 0 if c.get("tie_word_embeddings", False) else vocab * d
        return float(vocab * d + layers * (attention + mlp + 2 * d) + d + head), d, vocab
    except (KeyError, TypeError):
        return None


def parameters(config: dict, model: str) -> float:
    """Parameter count of a config model."""
    return _shape(config, model)[0]


def head_flops(config: dict, model: str) -> float:
    """FLOPs of one token through a model's output head (2 d V)."""
    _, hidden, vocab = _shape(config, model)
    return 2 * hidden * vocab


def _data(config: dict) -> tuple[int, int, dict[str, int], str]:
    data = config["data"]
    if data["source"] == "synthetic":
        return data["n_train"], data["n_dev"], dict(data["n_test"]), "synthetic"
    hub = data.get("hub", {})
    tests = {**PAPER_TEST_EXAMPLES, **data.get("limits", {})}
    return PAPER_TRAIN_EXAMPLES, hub.get("dev_size", 1000), {t: tests[t] for t in names.TEST_SETS}, "real"


def job_seconds(config: dict, cell: grid.Cell, rates: Rates = Rates()) -> dict[str, float]:
    """Estimated GPU-seconds of a cell's training job (``train``: training and the dev evaluations) and of its
    test evaluation (``evaluate``), summed over its processes."""
    pair = config["pairs"][cell.pair]
    training = grid.cell_training(config, cell)
    n_train, n_dev, n_test, kind = _data(config)
    model = parameters(config, pair[cell.role])
    tokens = n_train * TOKENS_PER_EXAMPLE[kind] * training["epochs"]
    flops = (4 if training.get("lora") else 6) * model * tokens
    generated = 0.5 * config["evaluation"]["max_new_tokens"]  # samples stop at EOS; about half the limit
    per_prompt = 2 * model * (PROMPT_TOKENS[kind] + generated)
    dev_seeds = len(config["evaluation"]["dev_seeds"]) + len(training_value(config["evaluation"], "dev_check_seeds"))
    dev = per_prompt * n_dev * dev_seeds * training["epochs"]
    if cell.needs_teacher:
        teacher = parameters(config, pair["teacher"])
        if cell.method == "seqkd":  # the teacher answers every training prompt once (sampling)
            dev += 2 * teacher * (PROMPT_TOKENS[kind] + generated) * n_train
        elif grid.uses_teacher_states(config, cell):  # cached: the teacher's head on the response tokens only
            flops += head_flops(config, pair["teacher"]) * tokens * RESPONSE_SHARE[kind]
        else:  # a frozen teacher forward on every training token
            flops += 2 * teacher * tokens
    test = per_prompt * sum(n_test.values()) * len(config["evaluation"]["seeds"])
    train_rate = rates.peak_tflops * 1e12 * rates.train_mfu
    generate_rate = rates.peak_tflops * 1e12 * rates.generate_mfu
    return {"train": flops / train_rate + dev / generate_rate, "evaluate": test / generate_rate}


def cache_seconds(config: dict, pair: str, rates: Rates = Rates()) -> float:
    """Estimated GPU-seconds of a pair's teacher-state cache job (``repro.teacher_states``)."""
    entry = grid.teacher_state_pairs(config)[pair]
    n_train, _, _, kind = _data(config)
    teacher = parameters(config, config["pairs"][pair]["teacher"])
    flops = 2 * teacher * n_train * TOKENS_PER_EXAMPLE[kind]
    if entry["cma"] and training_value(entry["training"], "cma_normalisation") == "official":
        flops += 2 * teacher * n_train * entry["training"]["max_length"]
    return flops / (rates.peak_tflops * 1e12 * rates.train_mfu)


def cache_minutes(config: dict, pair: str, margin: float = 1.5, floor: int = 10) -> int:
    """Wall-clock minutes to request for a pair's cache job: the estimate with ``margin``, at least ``floor``."""
    return max(floor, math.ceil(cache_seconds(config, pair) * margin / 60))


def job_minutes(config: dict, cell: grid.Cell, step: str, margin: float = 1.5, floor: int = 10) -> int:
    """Wall-clock minutes to request for a job (``step``: ``train`` or ``evaluate``): the estimate over the job's
    GPUs, with ``margin``, at least ``floor``."""
    gpus = training_value(grid.cell_training(config, cell), "processes") if step == "train" else 1
    return max(floor, math.ceil(job_seconds(config, cell)[step] / gpus * margin / 60))


def estimate(config: dict, rates: Rates = Rates()) -> list[dict]:
    """One row per job: run (or ``{pair}/teacher_states``), step (``train``, ``evaluate``, ``cache``), estimated
    GPU-hours and the minutes a cluster job would request."""
    rows = []
    for pair in grid.teacher_state_pairs(config):
        rows.append({"cell": f"{pair}/teacher_states", "step": "cache", "gpu_hours": cache_seconds(config, pair, rates)
                     / 3600, "request_minutes": cache_minutes(config, pair)})
    for run in grid.runs(config):
        seconds = job_seconds(config, run, rates)
        for step in ("train", "evaluate"):
            rows.append({"cell": run.run_id, "step": step, "gpu_hours": seconds[step] / 3600,
                         "request_minutes": job_minutes(config, run, step)})
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
                                     description="Estimated GPU-hours of every job of a configuration.")
    parser.add_argument("config", help="workflow configuration YAML, e.g. config/paper.yaml")
    parser.add_argument("--peak-tflops", type=float, default=Rates.peak_tflops, help="GPU peak bf16 TFLOP/s")
    parser.add_argument("--train-mfu", type=float, default=Rates.train_mfu, help="sustained share when training")
    parser.add_argument("--generate-mfu", type=float, default=Rates.generate_mfu, help="... when sampling")
    args = parser.parse_args(argv)
    rows = estimate(load_config(args.config), Rates(args.peak_tflops, args.train_mfu, args.generate_mfu))
    width = max(len(r["cell"]) for r in rows)
    print(f"{'cell':{width}}  {'job':8}  {'GPU-hours':>9}  {'requested minutes':>17}")
    for r in rows:
        print(f"{r['cell']:{width}}  {r['step']:8}  {r['gpu_hours']:9.2f}  {r['request_minutes']:17d}")
    total = sum(r["gpu_hours"] for r in rows)
    print(f"{'total':{width}}  {'':8}  {total:9.1f}")
    config = load_config(args.config)
    live = sum(r["gpu_hours"] for r in estimate(without_teacher_cache(config),
                                                Rates(args.peak_tflops, args.train_mfu, args.generate_mfu)))
    print(f"{'without the teacher-state cache':{width}}  {'':8}  {live:9.1f}  ({total / live:.2f}x with it)")


if __name__ == "__main__":
    main()
