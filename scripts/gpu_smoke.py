"""The device check: KD, DSKD and DSKD-CMA optimiser steps at the paper's shapes on one GPU, each with the teacher
live and read from the teacher-state cache, with tokens per second, MFU and peak GPU memory beside the memory
model's prediction for the same job.

The one script to run when a GPU is lent (one H100 or H200; it stops starting runs after ``--max-minutes`` and
writes what ran):

    python scripts/gpu_smoke.py --out results/gpu_smoke.json

Shapes come from ``config/paper.yaml`` (``--config``): the pairs ``llama`` (LLaMA2-7B -> TinyLLaMA) and ``gpt2``
(GPT2-1.5B -> GPT2-120M), each model at its published ``models.<name>.architecture`` (real depth, widths and
vocabulary; random weights), the pair's student training settings (``repro.settings.role_training``: the TinyLLaMA
students train LoRA r 256 on q/v, the GPT-2 student in full; bf16), ``training.micro_batch_size`` sequences per
micro batch and ``batch_size / micro_batch_size`` micro batches per optimiser step, every sequence
``training.max_length`` positions long with its first half a prompt (the longest the data allows: the memory
model's worst batch). Both models of a pair share the vocabulary; DSKD-CMA reads a teacher tokenisation with the
same ids.

Each optimiser step is the run's own (``repro.training.Trainer.optimiser_step``, mirrored here because a
``Trainer`` encodes its examples from text with a real tokenizer): ``repro.methods`` (the ``Context`` from
``repro.training.build_context``), ``begin_step`` over the global batch, micro batches through
``repro.data.collate``, bf16 autocast (``repro.device.make_accelerator``) with fp32 master weights, each loss
divided by the global batch's response tokens, clipping, AdamW over ``repro.training.param_groups``; the frozen
teacher in bf16, LoRA through ``repro.models.add_lora``. A cached run holds only ``repro.models.TeacherParts`` (the
head, and the input embeddings for DSKD-CMA) taken from the live teacher, whose body is deleted before the run; its
states (and DSKD-CMA's statistics) come from ``repro.teacher_states.build`` over the same examples, built once per
pair before any timer, as a run builds its cache once.

One line per run: tokens/s (student positions, prompt included, over the timed steps), MFU (FLOPs per step from
``repro.estimate.train_flops``, the estimate's own FLOP model, over the GPU's dense bf16 peak: ``--peak-tflops``,
else known from the device name), the measured peak (``torch.cuda.max_memory_allocated`` after a reset, GB =
1e9 bytes) and ``repro.memory.train_peak``'s prediction for that job, and their ratio. ``--tiny`` builds the same
families and structure at tiny widths, depths and vocabularies, so the script is checked on a CPU in seconds
(tests/test_scripts.py); the paper's shapes on a CPU are refused.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # the budget (--max-minutes) counts the imports too

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from repro import architecture, memory, teacher_states  # noqa: E402
from repro.data import IGNORE, Encoded, collate  # noqa: E402
from repro.device import make_accelerator  # noqa: E402
from repro.estimate import Work, train_flops  # noqa: E402
from repro.io import write_json  # noqa: E402
from repro.memory import GB, Batch, Dims, TrainJob, train_peak  # noqa: E402
from repro.methods import get_method  # noqa: E402
from repro.models import TeacherParts, add_lora, build_config, count_parameters  # noqa: E402
from repro.settings import TrainSettings, role_training  # noqa: E402
from repro.training import build_context, param_groups  # noqa: E402
from repro.validation import load_config  # noqa: E402

DIVERGENCE = "kl"
# Most informative first: the 7B pair as the paper configuration runs it (teacher_cache: true), then GPT-2, then
# DSKD-CMA, then the live teacher (what the cache saves).
ORDER = [("llama", "dskd", True), ("llama", "kd", True), ("gpt2", "dskd", True), ("gpt2", "kd", True),
         ("llama", "dskd_cma", True), ("gpt2", "dskd_cma", True),
         ("llama", "dskd", False), ("llama", "kd", False), ("gpt2", "dskd", False), ("gpt2", "kd", False),
         ("llama", "dskd_cma", False), ("gpt2", "dskd_cma", False)]
PAIRS = tuple(dict.fromkeys(p for p, _, _ in ORDER))
METHODS = tuple(dict.fromkeys(m for _, m, _ in ORDER))
# Dense bf16 peak TFLOP/s by device name (first match), for the MFU.
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
# --tiny: the same families, attention structure (grouped-query where the model has it), tied or untied heads and
# LoRA target modules at sizes a CPU takes in milliseconds.
TINY_SIZES = {"teacher": {"layers": 2, "hidden": 64, "heads": 4}, "student": {"layers": 1, "hidden": 32, "heads": 4}}
TINY_VOCAB, TINY_LORA_RANK, TINY_POSITIONS = 512, 4, 128
TINY_DEFAULTS = {"steps": 2, "warmup": 1, "micro_batch": 2, "seq_len": 32}
PAPER_DEFAULTS = {"steps": 3, "warmup": 1}


class VocabularyStandIn:
    """What the run's code reads of a tokenizer (``build_context``: its length; DSKD-CMA's statistics: the pad id)
    for random token ids; the models' own tokenizers are not needed to time a step. Every sequence is
    ``max_length`` long, so no position is ever padded and the pad id is never read as data."""

    def __init__(self, n_tokens: int):
        self.n_tokens = n_tokens
        self.eos_token_id = self.pad_token_id = n_tokens - 1

    def __len__(self) -> int:
        return self.n_tokens


@dataclass
class Pair:
    """One pair of the configuration as the script runs it: the models' descriptions (``repro.architecture``), the
    student's training settings, and the random examples (``length`` positions, ``prompt`` of them a prompt)."""
    name: str
    models: dict[str, str]  # role -> config model name
    specs: dict[str, dict]  # role -> architecture description (tiny-cut with --tiny)
    settings: TrainSettings
    length: int
    prompt: int
    examples: list[Encoded]

    @property
    def vocab(self) -> int:
        return self.specs["student"]["vocab_size"]

    @property
    def rows(self) -> int:
        """Response positions (labels) per example."""
        return self.length + 1 - self.prompt

    def dims(self, role: str) -> Dims:
        return Dims.from_fields(architecture.published_fields(self.specs[role]))


def tiny_spec(spec: dict, role: str, positions: int) -> dict:
    """``spec`` (a published architecture) at tiny sizes: the family, rotary theta, and grouped-query attention
    where the model has it (2 key/value heads for 4 query heads) are kept; widths, depth and vocabulary are not."""
    out = {"arch": spec["arch"], **TINY_SIZES[role], "max_positions": positions, "vocab_size": TINY_VOCAB}
    if spec.get("kv_heads") and spec["kv_heads"] < spec["heads"]:
        out["kv_heads"] = 2
    if "rope_theta" in spec:
        out["rope_theta"] = spec["rope_theta"]
    return out


def random_examples(n: int, length: int, prompt: int, vocab: int, seed: int) -> list[Encoded]:
    """``n`` examples of random ids, as ``repro.data.encode_example`` stores them (shifted: ``input_ids[t]``
    predicts ``labels[t]``): ``length`` positions, labels on the response after a ``prompt``-token prompt;
    ``index`` is the position in the list (the teacher-state cache finds an example's rows by it)."""
    ids = torch.randint(0, vocab, (n, length + 1), generator=torch.Generator().manual_seed(seed)).tolist()
    return [Encoded(input_ids=seq[:-1], labels=[IGNORE] * (prompt - 1) + seq[prompt:], index=i)
            for i, seq in enumerate(ids)]


def setup_pair(config: dict, name: str, args: argparse.Namespace) -> Pair:
    """The pair ``name`` of ``config``: its models' published architectures and its student's training settings,
    with the command line's micro batch, accumulation and sequence length where given (``--tiny``: tiny ones)."""
    where = f"{args.config}: pairs.{name}"
    if name not in config["pairs"]:
        raise SystemExit(f"{args.config}: no pair {name!r} (the script runs {list(PAIRS)})")
    pair = config["pairs"][name]
    models = {role: pair[role] for role in ("teacher", "student")}
    specs = {}
    for role, model in models.items():
        spec = config["models"][model].get("architecture")
        if spec is None:
            raise SystemExit(f"{args.config}: models.{model} has no 'architecture' (the published one is needed to "
                             f"build {where}.{role} at its real shape)")
        specs[role] = spec
    training = role_training(config, name, "student")
    training.pop("seeds", None)
    settings = TrainSettings(**training)
    length = args.seq_len or settings.max_length
    if args.tiny:
        specs = {role: tiny_spec(spec, role, max(TINY_POSITIONS, length)) for role, spec in specs.items()}
        if settings.lora:
            settings = replace(settings, lora={**settings.lora, "rank": TINY_LORA_RANK})
    if specs["teacher"]["vocab_size"] != specs["student"]["vocab_size"]:
        raise SystemExit(f"{where}: teacher and student have {specs['teacher']['vocab_size']} and "
                         f"{specs['student']['vocab_size']} embedding rows; the script runs KD and DSKD, which need "
                         f"one vocabulary")
    micro = args.micro_batch or settings.micro_batch_size
    accumulation = args.accumulation or settings.gradient_accumulation
    prompt = length // 2
    settings = replace(settings, micro_batch_size=micro, batch_size=micro * accumulation, max_length=length,
                       max_prompt_length=prompt)
    examples = random_examples((args.warmup + args.steps) * settings.batch_size, length, prompt,
                               specs["student"]["vocab_size"], seed=0)
    return Pair(name, models, specs, settings, length, prompt, examples)


def build_model(spec: dict, dtype: torch.dtype, device: torch.device, seed: int):
    """A randomly initialised causal LM of description ``spec`` (``repro.models.build_config``; each family's own
    dropout), created on ``device`` in ``dtype`` (initialising 7B parameters on a CPU would take minutes)."""
    special = VocabularyStandIn(spec["vocab_size"]).eos_token_id
    config = build_config(spec["arch"], spec["vocab_size"], spec["layers"], spec["hidden"], spec["heads"],
                          spec.get("kv_heads"), spec.get("intermediate"), spec.get("max_positions", 512), special,
                          special, special, None, spec.get("rope_theta"))
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


class Teachers:
    """The teachers of the runs, built when a run needs them, so that a run's GPU holds only what its job holds:
    the whole teacher for a live run (kept for the next live run of the same pair), for a cached run the head (and
    input embeddings) held on the host between runs, and each pair's cached states, built once from the live
    teacher (with DSKD-CMA's statistics when a cached DSKD-CMA run is planned)."""

    def __init__(self, pairs: dict[str, Pair], plan: list[tuple], accelerator, dtype: torch.dtype):
        self.pairs, self.accelerator, self.dtype = pairs, accelerator, dtype
        self.cma = {name: any(p == name and m == "dskd_cma" and c for p, m, c in plan) for name in pairs}
        self.held: tuple[str, torch.nn.Module] | None = None
        self.parts: dict[str, tuple] = {}  # pair -> (config, head, input embeddings), on the host
        self.states: dict[str, teacher_states.TeacherStates] = {}

    def release(self) -> None:
        self.held = None
        free_memory()

    def live(self, pair: Pair) -> torch.nn.Module:
        if self.held is None or self.held[0] != pair.name:
            self.release()
            teacher = build_model(pair.specs["teacher"], self.dtype, self.accelerator.device, seed=1).eval()
            self.held = (pair.name, teacher.requires_grad_(False))
        return self.held[1]

    def cached(self, pair: Pair, embeddings: bool) -> TeacherParts:
        """The teacher's parts on the device (the head; with ``embeddings`` the input embeddings too); the states
        are ``self.states[pair.name]``."""
        if pair.name not in self.parts:
            teacher = self.live(pair)
            settings = pair.settings
            with self.accelerator.autocast():
                self.states[pair.name] = teacher_states.build(
                    teacher, pair.examples, VocabularyStandIn(pair.vocab).pad_token_id, {},
                    (settings.cma_normalisation,) if self.cma[pair.name] else (), settings.max_length,
                    settings.micro_batch_size)
            # the parts are the live teacher's own modules (a tied head shares the embeddings' tensor); the body
            # goes with the teacher
            self.parts[pair.name] = (teacher.config, teacher.get_output_embeddings().to("cpu"),
                                     teacher.get_input_embeddings().to("cpu"))
            del teacher
        self.release()  # no live teacher (nor its body) on the device while a cached run is measured
        config, head, embed = self.parts[pair.name]
        source = f"random {pair.models['teacher']} ({pair.name} pair)"
        return TeacherParts(config, head, embed if embeddings else None, source).to(self.accelerator.device)


def free_memory() -> None:
    """Free what the last run left (cycles included) and hand the CUDA cache back, so the next run's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_student(pair: Pair, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The student as ``repro.cells.train_cell`` holds it: fp32 master weights, or with LoRA a frozen base in the
    precision's dtype and fp32 adapters initialised after the run's seed."""
    settings = pair.settings
    if settings.lora:
        student = build_model(pair.specs["student"], dtype, device, seed=settings.seed)
        torch.manual_seed(settings.seed)
        return add_lora(student, settings.lora)
    return build_model(pair.specs["student"], torch.float32, device, seed=settings.seed)


def optimiser_step(method, ctx, student, optimizer, trained: list, items: list[Encoded], settings: TrainSettings,
                   accelerator, pad_id: int, teacher_pad_id: int | None) -> dict[str, float]:
    """One optimiser step on the global batch ``items``, as ``repro.training.Trainer.optimiser_step`` takes it in one
    process: ``begin_step``, the micro batches by length, each loss divided by the global batch's response tokens,
    clipping, AdamW. Returns the loss terms per token."""
    n_tokens = sum(sum(label != IGNORE for label in e.labels) for e in items)
    sums: dict[str, float] = {}
    method.begin_step(items, ctx)
    local = sorted(items, key=lambda e: len(e.input_ids))
    for k in range(0, len(local), settings.micro_batch_size):
        batch = collate(local[k:k + settings.micro_batch_size], pad_id, teacher_pad_id)
        batch = {name: t.to(accelerator.device) for name, t in batch.items()}
        with accelerator.autocast():
            terms = method.loss(student, batch, ctx)
        (terms["loss"] / n_tokens).backward()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.item() / n_tokens
    if not all(math.isfinite(v) for v in sums.values()):
        raise FloatingPointError(f"non-finite loss: {sums}")
    torch.nn.utils.clip_grad_norm_(trained, settings.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums


def predict(pair: Pair, method: str, cached: bool, bf16: bool, correct_share: float):
    """``repro.memory``'s prediction for the job as it ran: the pair's models, the micro batch of full-length
    sequences, the accumulation, LoRA, bf16, the cache, and DSKD-CMA's measured share of rows whose projected
    teacher predicts the label. No dev sampling: the script takes no epoch's end."""
    s = pair.settings
    cross = get_method(method).cross_vocab
    rows = s.micro_batch_size * pair.rows
    batch = Batch(s.micro_batch_size, pair.length, rows, pair.length if cross else None, rows if cross else None)
    lora = (s.lora["rank"], list(s.lora["target_modules"])) if s.lora else None
    job = TrainJob(pair.dims("student"), batch, method, pair.dims("teacher"), lora, bf16,
                   accumulation=s.gradient_accumulation, teacher_cache=cached, student_ids=pair.vocab,
                   teacher_ids=pair.vocab, stored_bytes=2, correct_share=correct_share)
    return train_peak(job, "gpu")


def step_flops(pair: Pair, method: str, cached: bool) -> float:
    """Model FLOPs of one optimiser step (``repro.estimate.train_flops`` over the global batch's positions)."""
    s = pair.settings
    n = s.batch_size
    work = Work(n * pair.length, n * pair.length ** 2, n * pair.rows)
    lora = (s.lora["rank"], list(s.lora["target_modules"])) if s.lora else None
    return sum(train_flops(pair.dims("student"), work, method, pair.dims("teacher"), lora, cached, pair.vocab,
                           pair.vocab).values())


def run(pair: Pair, name: str, cached: bool, teachers: Teachers, accelerator, args, deadline: float) -> dict:
    """Set up and time one (pair, method, cached) run; the row of its results."""
    device, settings = accelerator.device, pair.settings
    on_gpu = device.type == "cuda"
    method = get_method(name)
    setup_started = time.perf_counter()
    teacher = teachers.cached(pair, method.teacher_embeddings) if cached else teachers.live(pair)
    try:
        tokenizer = VocabularyStandIn(pair.vocab)
        states = teachers.states[pair.name] if cached else None
        ctx = build_context(settings, tokenizer, DIVERGENCE, teacher, tokenizer if method.cross_vocab else None,
                            states)
        student = build_student(pair, device, teachers.dtype)
        # each run its own copies (prepare annotates them); a cross-vocabulary method reads a teacher tokenisation,
        # here the same ids
        examples = [Encoded(e.input_ids, e.labels, teacher=Encoded(e.input_ids, e.labels) if method.cross_vocab
                            else None, index=e.index) for e in pair.examples]
        if states is not None:
            teacher_states.check_matches(states, examples, f"{pair.name} states")
        with accelerator.autocast():
            method.prepare(examples, tokenizer, ctx)
        ctx.modules = method.build(student, ctx.teacher)
        groups = param_groups(student, ctx.modules, settings)
        for group in groups:  # the cosine schedule's first step
            group["lr"] = group["peak_lr"]
        optimizer = torch.optim.AdamW(groups, lr=settings.lr)
        trained = [p for group in groups for p in group["params"]]
        student.train()
        if ctx.modules is not None:
            ctx.modules.train()
        setup_s = time.perf_counter() - setup_started
        free_memory()
        held = None
        if on_gpu:
            torch.cuda.reset_peak_memory_stats(device)
            held = torch.cuda.memory_allocated(device)
        timings, losses, shares = [], [], []
        size = settings.batch_size
        for step in range(args.warmup + args.steps):
            items = examples[step * size:(step + 1) * size]
            if on_gpu:
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            sums = optimiser_step(method, ctx, student, optimizer, trained, items, settings, accelerator,
                                  tokenizer.pad_token_id, tokenizer.pad_token_id if method.cross_vocab else None)
            if on_gpu:
                torch.cuda.synchronize(device)
            shares.append(sums.get("t2s_acc", 0.0))
            if step >= args.warmup:
                timings.append(time.perf_counter() - started)
                losses.append(sums["loss"])
                if time.perf_counter() > deadline:  # the budget is spent: keep the steps timed so far
                    break
        peak = torch.cuda.max_memory_allocated(device) if on_gpu else None
        reserved = torch.cuda.max_memory_reserved(device) if on_gpu else None
        share = max(shares) if name == "dskd_cma" else 1.0
        prediction = predict(pair, name, cached, teachers.dtype == torch.bfloat16, share)
        tokens = size * pair.length
        flops = step_flops(pair, name, cached)
        seconds = sum(timings) / len(timings)
        return {
            "pair": pair.name, "method": name, "cached": cached, "teacher": pair.models["teacher"],
            "student": pair.models["student"], "micro_batch": settings.micro_batch_size,
            "accumulation": settings.gradient_accumulation, "seq_len": pair.length, "prompt_len": pair.prompt,
            "lora": settings.lora, "steps": len(timings), "warmup": args.warmup, "setup_s": setup_s,
            "s_per_step": seconds, "tokens_per_step": tokens, "tokens_per_s": tokens / seconds,
            "flops_per_token": flops / tokens,
            "mfu": flops / seconds / (args.peak_tflops * 1e12) if args.peak_tflops else None,
            "peak_bytes": peak, "peak_reserved_bytes": reserved, "held_at_start_bytes": held,
            "predicted_bytes": prediction.total, "predicted_phase": prediction.phase,
            "predicted_components": prediction.components,
            "ratio": peak / prediction.total if peak is not None else None,
            "losses": losses, "correct_share": share if name == "dskd_cma" else None,
            "student_parameters": count_parameters(student),
            "trained_parameters": sum(p.numel() for p in trained),
            "projector_parameters": count_parameters(ctx.modules) if ctx.modules is not None else 0,
            "teacher_parameters_held": count_parameters(teacher),
        }
    finally:
        if cached:  # the parts go back to the host for the pair's next cached run
            teacher.to("cpu")


def line(row: dict) -> str:
    """One printed line of a run's results."""
    what = f"{row['pair']:5s} {row['method']:8s} {'cached' if row['cached'] else 'live':6s}"
    if "error" in row:
        return f"{what} FAILED {row['error']}"
    mfu = f"{100 * row['mfu']:5.1f}%" if row["mfu"] is not None else "  n/a "
    peak = size(row["peak_bytes"]) if row["peak_bytes"] is not None else "n/a (CPU)"
    ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "n/a"
    return (f"{what} tokens/s {row['tokens_per_s']:9.0f}  s/step {row['s_per_step']:7.3f}  MFU {mfu}  "
            f"peak {peak:>9s}  predicted {size(row['predicted_bytes']):>9s} ({row['predicted_phase']})  "
            f"measured/predicted {ratio}  loss {row['losses'][-1]:.3f}")


def size(nbytes: float) -> str:
    """Bytes in GB (1e9, the memory model's unit), or MB below a tenth of one (tiny shapes)."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    """The device's name and its dense bf16 peak TFLOP/s where ``PEAK_TFLOPS`` knows it."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((value for key, value in PEAK_TFLOPS if key in name), None)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "paper.yaml"))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--cache", choices=["both", "cached", "live"], default="both",
                        help="runs with the teacher-state cache, with the live teacher, or both")
    parser.add_argument("--steps", type=int, help=f"timed optimiser steps per run (default "
                        f"{PAPER_DEFAULTS['steps']}; --tiny {TINY_DEFAULTS['steps']})")
    parser.add_argument("--warmup", type=int, help="untimed optimiser steps first (default 1)")
    parser.add_argument("--micro-batch", type=int, help="sequences per micro batch (default: the config's "
                        f"training.micro_batch_size; --tiny {TINY_DEFAULTS['micro_batch']})")
    parser.add_argument("--accumulation", type=int, help="micro batches per optimiser step (default: the config's "
                        "batch_size / micro_batch_size)")
    parser.add_argument("--seq-len", type=int, help="positions per sequence, the first half a prompt (default: the "
                        f"config's training.max_length; --tiny {TINY_DEFAULTS['seq_len']})")
    parser.add_argument("--max-minutes", type=float, default=9.0, help="start no run that would end after this "
                        "(forecast: the longest run so far), counted from the script's start; what ran is written")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak for the MFU (default: by the "
                        f"device's name: {', '.join(f'{k} {v:g}' for k, v in PEAK_TFLOPS)})")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes of the same families, to check the "
                        "script on a CPU")
    parser.add_argument("--out", help="write the device, versions and every run's row here as JSON (after each run)")
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.exit(2, "gpu_smoke.py: the paper's shapes need a GPU (none is visible); --tiny checks the script on "
                       "a CPU\n")
    for key, value in (TINY_DEFAULTS if args.tiny else PAPER_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.set_num_threads(args.threads)
    gc.freeze()  # what the imports made lives on: each run's collection walks only what came after
    config = load_config(args.config)
    plan = [(p, m, c) for p, m, c in ORDER if p in args.pairs and m in args.methods
            and args.cache in ("both", "cached" if c else "live")]
    pairs = {name: setup_pair(config, name, args) for name in dict.fromkeys(p for p, _, _ in plan)}
    deadline = STARTED + 60 * args.max_minutes
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name, known_peak = peak_tflops(device)
    args.peak_tflops = args.peak_tflops or known_peak
    report = {"device": device_name, "torch": torch.__version__, "transformers": transformers.__version__,
              "config": args.config, "tiny": args.tiny, "peak_tflops": args.peak_tflops,
              "max_minutes": args.max_minutes, "steps": args.steps, "warmup": args.warmup,
              "pairs": {name: {"models": p.models, "architecture": p.specs, "settings": {
                  "micro_batch_size": p.settings.micro_batch_size, "batch_size": p.settings.batch_size,
                  "max_length": p.length, "prompt": p.prompt, "precision": p.settings.precision,
                  "lora": p.settings.lora}} for name, p in pairs.items()},
              "runs": [], "skipped": [], "complete": False}
    teachers = accelerator = None
    longest = 0.0
    for pair_name, name, cached in plan:
        if time.perf_counter() + longest > deadline:
            report["skipped"].append({"pair": pair_name, "method": name, "cached": cached})
            continue
        if accelerator is None:  # made at the first run: its autocast is the run's (bf16 under bf16)
            before = memory.rss_bytes()
            accelerator = make_accelerator(next(iter(pairs.values())).settings)
            torch.ones(1, device=device).sum().item()  # the runtime's host side (repro.memory.CUDA_HOST_BYTES)
            report["host_rss"] = {"after_imports": before, "after_device_init": memory.rss_bytes()}
            print(f"host resident memory: {size(before or 0)} after the imports, "
                  f"{size(report['host_rss']['after_device_init'] or 0)} after the device's first operation",
                  flush=True)
            dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
            teachers = Teachers(pairs, plan, accelerator, dtype)
        started = time.perf_counter()
        try:
            row = run(pairs[pair_name], name, cached, teachers, accelerator, args, deadline)
        except Exception as e:  # one failed run (out of memory, say) must not cost the others
            traceback.print_exc()
            row = {"pair": pair_name, "method": name, "cached": cached, "error": f"{type(e).__name__}: {e}"}
        free_memory()
        row["wall_s"] = time.perf_counter() - started
        longest = max(longest, row["wall_s"])
        report["runs"].append(row)
        print(line(row), flush=True)
        if args.out:
            write_json(args.out, report)
    for skipped in report["skipped"]:
        print(f"{skipped['pair']:5s} {skipped['method']:8s} {'cached' if skipped['cached'] else 'live':6s} "
              f"skipped: --max-minutes {args.max_minutes:g} spent", flush=True)
    report["complete"] = True
    report["wall_s"] = time.perf_counter() - STARTED
    if args.out:
        write_json(args.out, report)
    if any("error" in row for row in report["runs"]):
        raise SystemExit(1)
    return report["runs"]


if __name__ == "__main__":
    main()
