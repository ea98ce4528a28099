"""Measured peak memory of every job kind beside ``repro.memory``'s prediction for it.

Every job kind of the paper grid runs here as the workflow runs it (``repro.cells.train_cell``,
``repro.cells.evaluate_cell``, ``python -m repro.teacher_states``), on one-layer models built with the real
tokenizers (``--tokenizers``: gpt2, llama2, mistral, qwen1.5 folders) and the first rows of the real Dolly data, each
job in a fresh process forked from one that has done the imports (so the baseline after the imports is clean); the
job records its own memory (``repro.memory.start_measure`` / ``finish_measure``) and this script compares the growth
of its resident memory with the prediction of ``repro.memory`` for the same models, batches and settings on a CPU.

    python scripts/memory_check.py --tokenizers ../shared/tokenizers --data ../shared/data/minillm [--widths rehearsal]

``--widths small`` (the test's: students 256 wide, teachers 384, the real vocabularies) or ``rehearsal`` (the
paper's widths, as the rehearsal builds them: several GB per job). Prints one line per job: measured and predicted
MB, their ratio and the predicted phase; ``--out FILE`` writes the same as JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from repro import layout, memory  # noqa: E402
from repro.io import read_json, write_json  # noqa: E402
from repro.settings import merges_lora  # noqa: E402


def resident_file_pages() -> list[int]:
    """The addresses of the pages of this process's readable file mappings (its libraries' code and data) that are
    resident now (``/proc/self/pagemap``'s present bit); empty without /proc."""
    import numpy as np

    page = os.sysconf("SC_PAGE_SIZE")
    out = []
    try:
        with open("/proc/self/maps", encoding="ascii") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            for line in maps:
                fields = line.split()
                if len(fields) < 6 or fields[4] == "0" or not fields[1].startswith("r") or \
                        fields[5].startswith(("[", "/dev/")):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                pagemap.seek(start // page * 8)
                entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
                out += (start + page * np.nonzero(entries >> np.uint64(63))[0]).tolist()
    except OSError:
        return []
    return out


# Recorded when the fork server imports this module (after the package, see ``run``): a process forked from it
# shares those pages but Linux does not copy their page-table entries, so until the child touches them again they
# are not in its resident memory, and every page the job would find resident in a fresh process after the same
# imports would count as the job's growth; ``_run_job`` touches them before the job's baseline.
RESIDENT_PAGES = resident_file_pages()


def touch(pages: list[int]) -> None:
    """Read one byte of each page (a minor fault: the page is in memory, now mapped here too)."""
    for address in pages:
        ctypes.c_char.from_address(address).value  # noqa: B018

# name -> (arch, tokenizer folder, width, heads, kv heads or None, intermediate or None)
WIDTHS = {
    "small": {"gpt2_teacher": ("gpt2", "gpt2", 384, 6, None, None),
              "gpt2_student": ("gpt2", "gpt2", 256, 4, None, None),
              "qwen_teacher": ("qwen2", "qwen1.5", 384, 6, None, 1024),
              "llama_teacher": ("llama", "llama2", 384, 6, None, 1024),
              "mistral_teacher": ("mistral", "mistral", 384, 6, 2, 1024),
              "tinyllama_student": ("llama", "llama2", 256, 4, 2, 704)},
    "tiny": {"gpt2_teacher": ("gpt2", "gpt2", 16, 2, None, None), "gpt2_student": ("gpt2", "gpt2", 8, 2, None, None),
             "qwen_teacher": ("qwen2", "qwen1.5", 16, 2, None, 32),
             "llama_teacher": ("llama", "llama2", 16, 2, None, 32),
             "mistral_teacher": ("mistral", "mistral", 16, 2, None, 32),
             "tinyllama_student": ("llama", "llama2", 8, 2, None, 16)},
    "rehearsal": {"gpt2_teacher": ("gpt2", "gpt2", 1600, 25, None, None),
                  "gpt2_student": ("gpt2", "gpt2", 768, 12, None, None),
                  "qwen_teacher": ("qwen2", "qwen1.5", 2048, 16, None, 5504),
                  "llama_teacher": ("llama", "llama2", 4096, 32, None, 11008),
                  "mistral_teacher": ("mistral", "mistral", 4096, 32, 8, 14336),
                  "tinyllama_student": ("llama", "llama2", 2048, 32, 4, 5632)},
}
VOCAB_ROWS = {"qwen1.5": 151936}  # embedding rows beyond the tokenizer's ids (Qwen1.5's padded rows)
LORA = {"rank": 16, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
# What the C allocator may keep of freed blocks beyond the model: glibc serves requests under the job's mmap threshold
# (1 MiB, repro.memory.fix_mmap_threshold) from its heap, which need not hand what is freed back, and the imports
# left their own heap behind, so the same job's peak moves by tens of MB between runs and machines (one small LoRA
# job: 266-281 MB over four runs here, 313 MB on the CI machine, 263 predicted). A prediction holds when the
# measured growth is within TOLERANCE of it plus this slack, which matters only for the small jobs.
ALLOCATOR_SLACK = 32 * 2**20
TOLERANCE = 0.15


def within(measured: float, predicted: float, mapped: float = 0.0) -> bool:
    """Whether a job's measured growth of resident memory is within TOLERANCE of the prediction plus the slack; a
    prediction with ``mapped`` bytes the job may leave unmapped (``repro.memory.Prediction.mapped``) holds from its
    lower bound ``predicted - mapped`` to ``predicted``."""
    margin = TOLERANCE * predicted + ALLOCATOR_SLACK
    return predicted - mapped - margin <= measured <= predicted + margin


@dataclass
class Job:
    """One job: ``kind`` ``train``, ``evaluate`` or ``cache``; for a training job the row's method, student,
    teacher and settings; ``needs``: the jobs whose outputs it reads."""
    name: str
    kind: str
    model: str
    method: str = "sft"
    teacher: str | None = None
    divergence: str | None = None
    cache: str | None = None  # the cache job whose states a cell reads
    cma: bool = False  # cache job: DSKD-CMA's statistics too
    bf16: bool = False
    lora: bool = False
    role: str = "student"
    needs: list[str] = field(default_factory=list)
    vocab_map: bool = False  # MinED: its vocabulary map is computed in the job (set by ``run``)


def default_jobs() -> list[Job]:
    """Every job kind of the paper grid, in an order where each job's inputs come first."""
    return [
        Job("cache gpt2", "cache", "gpt2_teacher"),
        Job("cache qwen (CMA)", "cache", "qwen_teacher", cma=True),
        Job("cache mistral", "cache", "mistral_teacher"),
        Job("cache llama (bf16)", "cache", "llama_teacher", bf16=True),
        Job("teacher sft", "train", "gpt2_teacher", role="teacher"),
        Job("sft", "train", "gpt2_student"),
        Job("kd live", "train", "gpt2_student", "kd", "gpt2_teacher", "kl"),
        Job("kd cached", "train", "gpt2_student", "kd", "gpt2_teacher", "akl", cache="cache gpt2"),
        Job("dskd cached", "train", "gpt2_student", "dskd", "gpt2_teacher", "kl", cache="cache gpt2"),
        Job("dskd student space", "train", "gpt2_student", "dskd_student_space", "gpt2_teacher", "kl",
            cache="cache gpt2"),
        Job("dskd_cma cached", "train", "gpt2_student", "dskd_cma", "qwen_teacher", "kl", cache="cache qwen (CMA)"),
        Job("uld cached", "train", "gpt2_student", "uld", "qwen_teacher", cache="cache qwen (CMA)"),
        Job("seqkd", "train", "gpt2_student", "seqkd", "qwen_teacher"),
        Job("mined cached", "train", "tinyllama_student", "mined", "mistral_teacher", cache="cache mistral"),
        Job("lora teacher (bf16)", "train", "llama_teacher", role="teacher", bf16=True, lora=True),
        Job("lora sft (bf16)", "train", "tinyllama_student", bf16=True, lora=True),
        Job("lora kd cached (bf16)", "train", "tinyllama_student", "kd", "llama_teacher", "kl", bf16=True, lora=True,
            cache="cache llama (bf16)"),
        Job("evaluate", "evaluate", "gpt2_student", needs=["sft"]),
        Job("evaluate lora (bf16)", "evaluate", "tinyllama_student", bf16=True, lora=True, needs=["lora sft (bf16)"]),
    ]


class Setup:
    """The folder of one check: data (``data/``), built models (``models/<name>``), job outputs (``jobs/``)."""

    def __init__(self, root: Path, tokenizers: Path, data: Path, widths: str | dict, rows: int = 16, micro: int = 4,
                 max_new_tokens: int = 16, jobs: list[Job] | None = None):
        self.root, self.tokenizers = Path(root), Path(tokenizers)
        self.widths = WIDTHS[widths] if isinstance(widths, str) else widths
        self.jobs = {j.name: j for j in (jobs if jobs is not None else default_jobs())}
        self.rows, self.micro, self.max_new_tokens = rows, micro, max_new_tokens
        self.data = self.root / "data"
        source = Path(data) / "dolly"
        lines = [line for line in (source / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        tests = [line for line in (source / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
        (self.data / "test").mkdir(parents=True, exist_ok=True)
        (self.data / "dev.jsonl").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
        (self.data / "train.jsonl").write_text("\n".join(lines[4:4 + rows]) + "\n", encoding="utf-8")
        (self.data / "test" / "dolly.jsonl").write_text("\n".join(tests[:4]) + "\n", encoding="utf-8")

    def model_dir(self, name: str) -> Path:
        return self.root / "models" / name

    def build(self, names: set[str]) -> None:
        """Build (random weights, stored in bf16 as the rehearsal stores them) the models ``names``."""
        from repro.models import init_model
        from repro.vocab import load_tokenizer

        for seed, name in enumerate(sorted(names)):
            if self.model_dir(name).is_dir():
                continue
            arch, tok, width, heads, kv, inner = self.widths[name]
            spec = {"arch": arch, "layers": 1, "hidden": width, "heads": heads, "max_positions": 1024,
                    "dtype": "bfloat16", **({"kv_heads": kv} if kv else {}),
                    **({"intermediate": inner} if inner else {}),
                    **({"vocab_size": VOCAB_ROWS[tok]} if tok in VOCAB_ROWS else {})}
            init_model(spec, load_tokenizer(self.tokenizers / tok), self.model_dir(name), seed=seed)

    def out_dir(self, job: Job) -> Path:
        """The job's folder; an evaluation job's is the folder of the run it evaluates."""
        if job.kind == "evaluate":
            return self.out_dir(self.jobs[job.needs[0]])
        return self.root / "jobs" / job.name.replace(" ", "_").replace("(", "").replace(")", "")

    def training(self, job: Job) -> dict:
        return {"lr": 1e-4, "epochs": 1, "batch_size": 2 * self.micro, "micro_batch_size": self.micro,
                "max_length": 512, "max_prompt_length": 256, "checkpoint_every": 1, "dev_seeds": [10],
                "precision": "bf16" if job.bf16 else "fp32", "teacher_cache": job.cache is not None,
                **({"lora": LORA} if job.lora else {})}

    def cell_config(self, job: Job):
        from repro.cells import CellConfig

        return CellConfig(cell_id=f"check/{job.name}", pair="check", method=job.method, role=job.role,
                          model=str(self.model_dir(job.model)), data_dir=str(self.data), out_dir=str(self.out_dir(job)),
                          training=self.training(job), divergence=job.divergence,
                          evaluation={"seeds": [10], "max_new_tokens": self.max_new_tokens, "batch_size": 32},
                          teacher=str(self.model_dir(job.teacher)) if job.teacher else None,
                          teacher_states=str(self.out_dir(self.jobs[job.cache]) / "states.pt") if job.cache else None,
                          test_sets=("dolly",))


def _run_job(setup: Setup, job: Job) -> None:
    """The job itself, in the forked process."""
    import memory_check
    import torch

    from repro import cells, teacher_states

    touch(memory_check.RESIDENT_PAGES)  # the fork server's resident file pages: the baseline of a fresh process
    torch.set_num_threads(1)
    out = setup.out_dir(job)
    if job.kind == "cache":
        training = {**setup.training(job), "cma_normalisation": "official"}
        teacher_states.main(["--teacher", str(setup.model_dir(job.model)), "--data", str(setup.data / "train.jsonl"),
                             "--out", str(out / "states.pt"), "--training", json.dumps(training)]
                            + (["--cma"] if job.cma else []))
    elif job.kind == "train":
        cells.train_cell(setup.cell_config(job))
    else:
        cells.evaluate_cell(setup.cell_config(job))


def record_of(setup: Setup, job: Job) -> dict:
    """The memory record the job wrote."""
    out = setup.out_dir(job)
    if job.kind == "evaluate":
        return read_json(layout.evaluation_memory_file(out))
    file = {"cache": out / "states.json", "train": out / "train_summary.json"}
    return read_json(file[job.kind])["memory"]


def run(setup: Setup, selected: list[Job]) -> dict[str, dict]:
    """Run ``selected`` one after another, each in a fresh process forked from a server that has imported the
    package (``forkserver``); returns each job's memory record."""
    context = multiprocessing.get_context("forkserver")
    # the fork server imports this module by name (Python 3.11 starts it with the default sys.path)
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p])
    context.set_forkserver_preload(["torch", "transformers", "repro.cells", "repro.teacher_states", "memory_check"])
    records = {}
    for job in selected:
        if job.kind != "evaluate":  # (an evaluation job writes into the folder of the run it evaluates)
            shutil.rmtree(setup.out_dir(job), ignore_errors=True)
            setup.out_dir(job).mkdir(parents=True)
        if job.method == "mined":
            job.vocab_map = _map_computed(setup, job)
        started = time.perf_counter()
        process = context.Process(target=_run_job, args=(setup, job))
        process.start()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"job {job.name!r} failed (exit code {process.exitcode})")
        records[job.name] = {**record_of(setup, job), "seconds": round(time.perf_counter() - started, 1),
                             "vocab_map": job.vocab_map}
    return records


# ---------------------------------------------------------------------------------------------------------------
# Predictions for the same jobs


def dims(setup: Setup, name: str, model_dir: Path | None = None) -> memory.Dims:
    return memory.Dims.from_fields(read_json((model_dir or setup.model_dir(name)) / "config.json"))


def _batches(setup: Setup, job: Job, rows: list[dict]) -> list[tuple[int, int, memory.Batch]]:
    """The micro batches of the job's one epoch, as ``repro.training.Trainer`` forms them (the epoch's order, each
    global batch sorted by length and cut into micro batches): (step, micro batch in the step, its shape)."""
    import torch

    from repro.data import IGNORE, encode_dataset
    from repro.names import method

    training = setup.training(job)
    tok = _tokenizer(str(setup.model_dir(job.model)))
    cross = method(job.method).cross_vocab
    teacher_tok = _tokenizer(str(setup.model_dir(job.teacher))) if cross else None
    encoded = encode_dataset(rows, tok, training["max_length"], training["max_prompt_length"],
                             teacher_tokenizer=teacher_tok)
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(10)).tolist()
    out = []
    size, micro = training["batch_size"], training["micro_batch_size"]
    for step, start in enumerate(range(0, len(order), size)):
        local = sorted((encoded[j] for j in order[start:start + size]), key=lambda e: len(e.input_ids))
        for k in range(0, len(local), micro):
            part = local[k:k + micro]
            counts = [sum(label != IGNORE for label in e.labels) for e in part]
            t_part = [e.teacher for e in part] if cross else None
            out.append((step, k // micro, memory.Batch(
                len(part), max(len(e.input_ids) for e in part), sum(counts),
                max(len(e.input_ids) for e in t_part) if t_part else None,
                sum(label != IGNORE for e in t_part for label in e.labels) if t_part else None, max(counts))))
    return out


def _sampling(setup: Setup, model: str, file: Path, batch: int = 32) -> memory.Sampling:
    from repro.data import load_examples

    tok = _tokenizer(str(setup.model_dir(model)))
    rows = load_examples(file)
    prompt = max(min(len(tok(r["prompt"], add_special_tokens=False)["input_ids"]), 256) for r in rows)
    return memory.Sampling(min(batch, len(rows)), prompt, setup.max_new_tokens)


@functools.lru_cache(maxsize=None)
def _tokenizer(folder: str):
    from repro.vocab import load_tokenizer

    return load_tokenizer(folder)


def tokenizer_file(setup: Setup, name: str) -> int:
    return (setup.model_dir(name) / "tokenizer.json").stat().st_size


def _map_computed(setup: Setup, job: Job) -> bool:
    """Whether MinED's vocabulary map is computed in the job (two tokenizers, no map cached yet): checked before
    the job runs."""
    from repro.alignment import _cache_file

    s_tok, t_tok = (_tokenizer(str(setup.model_dir(name))) for name in (job.model, job.teacher))
    return s_tok.get_vocab() != t_tok.get_vocab() and not _cache_file(t_tok, s_tok, "convert").exists()


def predict(setup: Setup, job: Job, mmap_threshold: int | None = memory.MMAP_THRESHOLD) -> memory.Prediction:
    """``repro.memory``'s prediction (on a CPU) for the job as it ran (with glibc's ``mmap_threshold``, its
    record's)."""
    from repro.data import load_examples

    if job.kind == "evaluate":
        trained = setup.out_dir(job) / "model"
        # a LoRA student's model is its adapter, merged on loading into the built base (stored in bf16)
        return memory.evaluate_peak(dims(setup, job.model, None if job.lora else trained),
                                    _sampling(setup, job.model, setup.data / "test" / "dolly.jsonl"), job.bf16, "cpu",
                                    stored_bytes=2 if job.bf16 or job.lora else 4,
                                    tokenizer_file=(trained / "tokenizer.json").stat().st_size, adapter=job.lora)
    rows = load_examples(setup.data / "train.jsonl")
    if job.kind == "cache":
        batches = [b for _, _, b in _batches(setup, Job("", "train", job.model), rows)]
        total = sum(b.rows for b in batches)
        widest = max(batches, key=lambda b: b.tokens)
        return memory.cache_peak(dims(setup, job.model), widest, len(rows), total, job.bf16, "cpu",
                                 cma_length=512 if job.cma else None, stored_bytes=2,
                                 tokenizer_file=tokenizer_file(setup, job.model))
    if job.method == "seqkd":  # the student trains on the teacher's samples
        rows = load_examples(setup.out_dir(job) / "seqkd_train.jsonl")
    student = dims(setup, job.model)
    teacher = dims(setup, job.teacher) if job.teacher else None
    ids = lambda name: len(_tokenizer(str(setup.model_dir(name))))  # noqa: E731
    dev = _sampling(setup, job.model, setup.data / "dev.jsonl")
    seqkd = _sampling(setup, job.teacher, setup.data / "train.jsonl") if job.method == "seqkd" else None
    best = None
    for step, micro, batch in _batches(setup, job, rows):
        prediction = memory.train_peak(memory.TrainJob(
            student, batch, job.method, teacher, (LORA["rank"], LORA["target_modules"]) if job.lora else None,
            job.bf16, accumulation=2, teacher_cache=job.cache is not None, student_ids=ids(job.model),
            teacher_ids=ids(job.teacher) if job.teacher else None, dev=dev, seqkd=seqkd, stored_bytes=2,
            tokenizer_files=(tokenizer_file(setup, job.model),
                             tokenizer_file(setup, job.teacher) if job.teacher else None),
            moments=step > 0, earlier_gradients=micro > 0,
            correct_share=0.0, vocab_map=job.vocab_map, merge=merges_lora(job.role), mmap_threshold=mmap_threshold),
            "cpu")  # random weights: no projected label is right
        best = prediction if best is None or prediction.total > best.total else best
    return best


def check(setup: Setup, selected: list[Job], rerun: bool = True) -> list[dict]:
    """Build the models, run the jobs (``rerun`` False: read the records they wrote before), and compare: one dict
    per job (measured and predicted bytes, ratio, predicted phase and components)."""
    needed = {j.model for j in selected if j.kind != "evaluate"} | {j.teacher for j in selected if j.teacher}
    setup.build(needed)
    records = run(setup, selected) if rerun else {j.name: {**record_of(setup, j), "seconds": 0.0} for j in selected}
    out = []
    for job in selected:
        job.vocab_map = records[job.name].get("vocab_map", False)
        prediction = predict(setup, job, records[job.name].get("mmap_threshold"))
        measured = records[job.name]["rss_increase"]
        out.append({"job": job.name, "measured": measured, "predicted": prediction.total, "mapped": prediction.mapped,
                    "ratio": prediction.total / measured, "phase": prediction.phase,
                    "components": prediction.components, "record": records[job.name]})
    return out


# ---------------------------------------------------------------------------------------------------------------
# A finished rehearsal's jobs: the memory they recorded against the prediction


def micro_batches(encoded: list, batch_size: int, micro: int, seed: int) -> list[tuple[int, int, memory.Batch]]:
    """The micro batches of one epoch of ``encoded`` (``repro.data.Encoded``, with teacher encodings for a
    cross-vocabulary pair) as ``repro.training.Trainer`` forms them: (step, micro batch in the step, its shape)."""
    import torch

    from repro.data import IGNORE

    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for step, start in enumerate(range(0, len(order), batch_size)):
        local = sorted((encoded[j] for j in order[start:start + batch_size]), key=lambda e: len(e.input_ids))
        for k in range(0, len(local), micro):
            part = local[k:k + micro]
            counts = [sum(label != IGNORE for label in e.labels) for e in part]
            t_part = [e.teacher for e in part] if part[0].teacher is not None else None
            out.append((step, k // micro, memory.Batch(
                len(part), max(len(e.input_ids) for e in part), sum(counts),
                max(len(e.input_ids) for e in t_part) if t_part else None,
                sum(label != IGNORE for e in t_part for label in e.labels) if t_part else None, max(counts))))
    return out


def _stored(folder: Path) -> int:
    """Bytes per parameter of a checkpoint's files (its config.json's dtype)."""
    fields = read_json(folder / "config.json")
    return 2 if (fields.get("dtype") or fields.get("torch_dtype")) == "bfloat16" else 4


def _map_tokens(teacher_tok, student_tok) -> int:
    """The teacher tokens MinED's vocabulary map compares by edit distance (no exact match)."""
    from repro.alignment import mapping_strings

    t_strings, s_strings = mapping_strings(teacher_tok, student_tok, "convert")
    exact = set(s_strings)
    return sum(t not in exact for t in t_strings)


def rehearsal_records(config_file: Path) -> list[dict]:
    """Every job of a finished rehearsal (its config beside its ``results``) that recorded its memory: the growth of
    its resident memory beside ``repro.memory``'s CPU prediction for the same models, batches and settings."""
    from repro import grid, names
    from repro.data import encode_dataset, load_examples
    from repro.models import is_adapter
    from repro.validation import load_config

    root = Path(config_file).resolve().parent
    config = load_config(config_file)
    out = []

    def tok(folder: Path):
        return _tokenizer(str(folder))

    def dims_of(folder: Path) -> memory.Dims:
        return memory.Dims.from_fields(read_json(folder / "config.json"))

    def size(folder: Path) -> int:
        return (folder / "tokenizer.json").stat().st_size

    def sampling(folder: Path, files: list[Path], new: int) -> memory.Sampling:
        t = tok(folder)
        prompts = [min(len(t(r["prompt"], add_special_tokens=False)["input_ids"]), 256)
                   for f in files for r in load_examples(f)]
        return memory.Sampling(min(config["evaluation"]["batch_size"], max(len(load_examples(f)) for f in files)),
                               max(prompts), new)

    data = root / grid.data_dir(config)
    new = config["evaluation"]["max_new_tokens"]
    for pair, entry in grid.teacher_state_pairs(config).items():
        info = layout.teacher_states_info(root / grid.teacher_states_file(config, pair))
        if not info.is_file() or "memory" not in read_json(info):
            continue
        training = entry["training"]
        teacher_dir = root / grid.checkpoint_dir(config, grid.teacher_run(config, grid.Cell(pair, "sft", "teacher")))
        encoded = encode_dataset(load_examples(data / "train.jsonl"), tok(teacher_dir), training["max_length"],
                                 training["max_prompt_length"])
        ordered = sorted(encoded, key=lambda e: len(e.input_ids))
        micro = training["micro_batch_size"]
        chunks = [ordered[k:k + micro] for k in range(0, len(ordered), micro)]
        widest = max(chunks, key=lambda c: len(c) * max(len(e.input_ids) for e in c))
        rows = sum(sum(label != -100 for label in e.labels) for e in encoded)
        bf16 = training.get("precision") == "bf16"
        prediction = memory.cache_peak(dims_of(teacher_dir), memory.Batch(len(widest), max(
            len(e.input_ids) for e in widest), 0), len(encoded), rows, bf16, "cpu",
            training["max_length"] if entry["cma"] else None, _stored(teacher_dir), size(teacher_dir))
        record = read_json(info)["memory"]
        out.append({"job": f"{pair}/teacher_states", "measured": record["rss_increase"], "prediction": prediction,
                    "record": record})
    for run in grid.runs(config):
        params = grid.cell_params(config, run)
        run_dir = root / params["out_dir"]
        training = params["training"]
        bf16 = training.get("precision") == "bf16"
        checkpoint = run_dir / "model"
        measured = layout.evaluation_memory_file(run_dir)
        if measured.is_file():
            tests = [data / "test" / f"{name}.jsonl" for name in names.TEST_SETS]
            adapter = is_adapter(checkpoint)  # a LoRA student's: its base, merged with it on loading
            base = root / params["model"] if adapter else checkpoint
            prediction = memory.evaluate_peak(dims_of(base), sampling(checkpoint, tests, new), bf16, "cpu",
                                              _stored(base), size(checkpoint), adapter=adapter)
            record = read_json(measured)
            out.append({"job": f"{run.run_id} (evaluate)", "measured": record["rss_increase"],
                        "prediction": prediction, "record": record})
        summary_file = run_dir / "train_summary.json"
        if not summary_file.is_file() or "memory" not in read_json(summary_file):
            continue
        record = read_json(summary_file)["memory"]
        student_dir = root / params["model"]
        teacher_dir = root / params["teacher"] if params["teacher"] else None
        traits = names.method(run.method)
        s_tok = tok(student_dir)
        t_tok = tok(teacher_dir) if teacher_dir is not None else None
        rows = load_examples(run_dir / "seqkd_train.jsonl" if traits.black_box else data / "train.jsonl")
        encoded = encode_dataset(rows, s_tok, training["max_length"], training["max_prompt_length"],
                                 teacher_tokenizer=t_tok if traits.cross_vocab else None)
        lora = training.get("lora")
        map_tokens = _map_tokens(t_tok, s_tok) if run.method == "mined" else False
        best = None
        for step, micro, batch in micro_batches(encoded, training["batch_size"], training["micro_batch_size"],
                                                training["seed"]):
            prediction = memory.train_peak(memory.TrainJob(
                dims_of(student_dir), batch, run.method, dims_of(teacher_dir) if teacher_dir else None,
                (lora["rank"], list(lora["target_modules"])) if lora else None, bf16,
                accumulation=training["batch_size"] // training["micro_batch_size"],
                teacher_cache=params["teacher_states"] is not None, student_ids=len(s_tok),
                teacher_ids=len(t_tok) if t_tok is not None else None,
                dev=sampling(student_dir, [data / "dev.jsonl"], new),
                seqkd=sampling(teacher_dir, [data / "train.jsonl"], new) if traits.black_box else None,
                stored_bytes=_stored(student_dir),
                teacher_stored_bytes=_stored(teacher_dir) if teacher_dir else None,
                tokenizer_files=(size(student_dir), size(teacher_dir) if teacher_dir else None),
                moments=step > 0, earlier_gradients=micro > 0, correct_share=0.0, vocab_map=map_tokens,
                merge=merges_lora(run.role), mmap_threshold=record.get("mmap_threshold")), "cpu")
            best = prediction if best is None or prediction.total > best.total else best
        out.append({"job": f"{run.run_id} (train)", "measured": record["rss_increase"], "prediction": best,
                    "record": record})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizers", help="folder with gpt2, llama2, mistral, qwen1.5 tokenizers")
    parser.add_argument("--data", help="processed data folder (dolly/dev.jsonl, dolly/test.jsonl)")
    parser.add_argument("--rehearsal", help="instead: a finished rehearsal's config (DIR/rehearsal.yaml); compare "
                        "the memory its jobs recorded with the prediction")
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="small")
    parser.add_argument("--root", default="memory-check", help="working folder (models, data, job outputs)")
    parser.add_argument("--jobs", nargs="+", help="only these jobs (names as printed; their inputs run too)")
    parser.add_argument("--out", help="write the results as JSON")
    parser.add_argument("--predict-only", action="store_true", help="compare with the records of a previous run "
                        "in the same --root (no job runs)")
    args = parser.parse_args(argv)
    if args.rehearsal:
        results = rehearsal_records(Path(args.rehearsal))
        print(f"{'job':44} {'measured MB':>11} {'predicted MB':>12} {'ratio':>6} {'within':>6}  phase")
        for r in results:
            p = r["prediction"]
            print(f"{r['job']:44} {r['measured'] / 1e6:11.0f} {p.total / 1e6:12.0f} {p.total / r['measured']:6.2f} "
                  f"{'yes' if within(r['measured'], p.total, p.mapped) else 'NO':>6}  {p.phase}")
        print(f"{sum(within(r['measured'], r['prediction'].total, r['prediction'].mapped) for r in results)} of "
              f"{len(results)} jobs within "
              f"{TOLERANCE:.0%} plus {ALLOCATOR_SLACK >> 20} MiB")
        if args.out:
            write_json(args.out, [{"job": r["job"], "measured": r["measured"], "predicted": r["prediction"].total,
                                   "within": within(r["measured"], r["prediction"].total, r["prediction"].mapped),
                                   "phase": r["prediction"].phase, "components": r["prediction"].components,
                                   "mmap_threshold": r["record"].get("mmap_threshold")}
                                  for r in results])
        return
    if not args.tokenizers or not args.data:
        parser.error("--tokenizers and --data are needed (or --rehearsal)")
    setup = Setup(Path(args.root), Path(args.tokenizers), Path(args.data), args.widths)
    selected = list(setup.jobs.values())
    if args.jobs:
        wanted = set(args.jobs)
        for name in list(wanted):
            wanted |= {setup.jobs[name].cache} - {None} | set(setup.jobs[name].needs)
        selected = [j for j in selected if j.name in wanted]
    results = check(setup, selected, rerun=not args.predict_only)
    print(f"{'job':24} {'measured MB':>11} {'predicted MB':>12} {'ratio':>6} {'within':>6} {'seconds':>7}  phase")
    for r in results:
        print(f"{r['job']:24} {r['measured'] / 1e6:11.0f} {r['predicted'] / 1e6:12.0f} {r['ratio']:6.2f} "
              f"{'yes' if within(r['measured'], r['predicted'], r['mapped']) else 'NO':>6} "
              f"{r['record']['seconds']:7.1f}  {r['phase']}")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
