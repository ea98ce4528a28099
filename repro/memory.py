"""The memory every job holds: a physical model of its peak (torch-free: the estimate and the Snakefile read it), and
the measurement each job records beside it.

The model counts what a job holds, in bytes, from the models' sizes and the job's settings, for two kinds of
device: ``"gpu"`` (the paper run: bf16 autocast where the precision says so, ``torch.cuda.max_memory_allocated``)
and ``"cpu"`` (what the rehearsal measures: the growth of the process's resident memory over its baseline after the
imports). A training job (``TrainJob``) holds, at its peak:
- the weights: the student's fp32 master weights (a LoRA student: its frozen base in the storage dtype of the
  precision, bf16 under bf16, and fp32 adapters), the method's projectors, the teacher it reads (whole; or, from
  the teacher-state cache, only its head, and its input embeddings for DSKD-CMA), in the frozen dtype;
- the gradients of every trained parameter (fp32) and AdamW's two moments (fp32; split across the processes with
  ``shard_optimizer``), and the optimiser step's own temporaries;
- the activations autograd keeps for the backward pass, per layer and token at the micro batch's padded length
  (``activation_bytes``: the tensors each architecture family saves, counted from its autograd graph) and, under
  bf16 autocast, the bf16 copies of the trained weights that autocast caches for the step;
- the vocabulary-sized buffers of the method's loss (``repro.lean``: the student's logits at the response rows, the
  one float32 gradient buffer, DSKD's detached projected logits, ULD's sorted distributions, MinED's target rows)
  and the gradient of the output head;
- the phases outside the steps: loading (a checkpoint stored in another dtype is converted: both copies for a
  moment), the dev sampling after each epoch (``generation_bytes``: KV cache and last-position logits), SeqKD's
  teacher sampling, MinED's vocabulary map (edit distances, a chunk of teacher tokens against every student token)
  and, for LoRA, the merge of the adapter into an fp32 copy of the base (on the host).
The evaluation job holds the model and its sampling buffers; the cache job the teacher, one forward's transients
and, on the host, the cached states twice (the rows, then their concatenation).

The peak of a job is the largest of its phases. On a CPU the measured resident memory also holds the runtime's own
pages that the first operations touch (kernels, thread pools): ``CPU_RUNTIME_BYTES``, one constant for every job.
Every job fixes glibc's mmap threshold when it starts (``fix_mmap_threshold``), so that the blocks it frees leave
the process and its resident memory is what it holds.
What the model leaves out: the CUDA context (outside the allocator's count), allocator fragmentation, and the
page-cache pages of memory-mapped files (the teacher-state cache a cell reads), which the kernel can reclaim.
"""
from __future__ import annotations

import ctypes
import math
import os
import resource
import sys
from dataclasses import dataclass, field, replace

from . import names

GB = 1e9
GPU_SIZES_GB = (24, 40, 80, 141)  # the common GPU memory sizes the estimate names
# Resident memory a CPU job touches beyond its tensors and tokenizers: the kernels' code and the thread pools that its
# first operations load, and the allocator's free blocks: 21-34 MB on jobs of tiny tensors (a cache job 25, SFT 24, an
# evaluation 34; scripts/memory_check.py --widths tiny).
CPU_RUNTIME_BYTES = 25e6
MAP_CHUNK = 2048  # teacher tokens per block of MinED's edit distances (repro.alignment.vocab_mapping)
HEAD_BLOCK_ENTRIES = 1 << 22  # entries of a teacher-logit block (repro.lean.HEAD_BLOCK_ENTRIES)


# ---------------------------------------------------------------------------------------------------------------
# Measurement: what a job records of its own memory


def rss_bytes() -> int | None:
    """The process's current resident memory in bytes (``/proc/self/statm``), or None where there is no /proc."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int:
    """The process's peak resident memory in bytes: ``VmHWM`` of ``/proc/self/status`` (the high-water mark that
    ``start_measure`` resets), else ``ru_maxrss`` (kilobytes on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if os.uname().sysname == "Darwin" else peak * 1024


# glibc's malloc serves a request of at least its mmap threshold with a mapping of its own, given back to the system
# when freed; smaller requests come from its heap, which keeps what is freed for later requests. By default the
# threshold is dynamic: it starts at 128 KiB and rises to the size of every mapped block freed (up to 32 MiB), so
# after a step has freed its activations, blocks of that size come from the heap and what they free stays resident
# (bf16 autocast's weight copies: a LoRA SFT step at LLaMA's widths grew 732, 877, 899 MB over three steps). A job
# fixes the threshold at the start (``start_measure``): its resident memory is then what it holds. The cost in time
# is measured side by side by scripts/benchmark_allocator.py. ``REPRO_MMAP_THRESHOLD`` sets another value (bytes),
# or ``glibc`` leaves glibc's dynamic default.
MMAP_THRESHOLD = 1 << 20
MMAP_THRESHOLD_ENV = "REPRO_MMAP_THRESHOLD"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit systems


def mmap_threshold_setting() -> int | None:
    """The threshold a job sets: ``REPRO_MMAP_THRESHOLD`` (bytes, or ``glibc``: None), else ``MMAP_THRESHOLD``."""
    value = os.environ.get(MMAP_THRESHOLD_ENV, "").strip()
    if not value:
        return MMAP_THRESHOLD
    if value.lower() == "glibc":
        return None
    try:
        threshold = int(value)
    except ValueError:
        threshold = -1
    if not 0 < threshold <= _MMAP_THRESHOLD_MAX:
        raise ValueError(f"environment variable {MMAP_THRESHOLD_ENV}={value!r}: expected a number of bytes from 1 to "
                         f"{_MMAP_THRESHOLD_MAX} (glibc's largest), or 'glibc' for glibc's dynamic default")
    return threshold


def fix_mmap_threshold() -> int | None:
    """Fix glibc's mmap threshold (and its trim threshold at twice that, glibc's own ratio) for this process, as
    ``mmap_threshold_setting`` says; returns the threshold set, None where none was (not glibc, or ``glibc``)."""
    threshold = mmap_threshold_setting()
    if threshold is None or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # another C library (musl): no mallopt thresholds
            return None
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, threshold) != 1 or mallopt(_M_TRIM_THRESHOLD, 2 * threshold) != 1:
        return None
    return threshold


def start_measure() -> dict:
    """Call when a job starts (after its imports): fixes glibc's mmap threshold (``fix_mmap_threshold``), and
    resets the peak resident memory to the current one where Linux allows it (``/proc/self/clear_refs``), so that
    the job's peak is its own, not that of what the process ran before (a notebook kernel's earlier cells, the
    parent's memory before ``exec``); returns the baseline and the threshold set."""
    threshold = fix_mmap_threshold()
    reset = False
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    return {"rss_baseline": rss_bytes(), "peak_reset": reset, "mmap_threshold": threshold}


def finish_measure(start: dict, gpu_peak: int | None = None) -> dict:
    """The job's memory record, for its summary file: ``rss_baseline`` and ``rss_peak`` (bytes), their difference
    ``rss_increase``, whether the peak was reset at the start (else it may include what the process held before),
    ``gpu_max_allocated`` (``torch.cuda.max_memory_allocated``, bytes; None without a GPU) and the
    ``mmap_threshold`` the job ran with (None: glibc's dynamic default)."""
    peak = peak_rss_bytes()
    baseline = start["rss_baseline"]
    return {"rss_baseline": baseline, "rss_peak": peak,
            "rss_increase": peak - baseline if baseline is not None else None,
            "peak_reset": start["peak_reset"], "gpu_max_allocated": gpu_peak,
            "mmap_threshold": start.get("mmap_threshold")}


# ---------------------------------------------------------------------------------------------------------------
# A model's sizes


@dataclass(frozen=True)
class Dims:
    """The sizes of a causal LM that its memory depends on, from its ``transformers`` config fields (config.json
    names; ``repro.architecture.hf_fields`` gives them for a described model): family (``arch``), ``layers``,
    ``hidden`` (d), ``intermediate`` (MLP width), ``heads``, ``kv_heads``, ``head_dim``, ``rows`` (embedding and
    head rows), ``positions``, ``tied`` (head shares the input embeddings), ``attention_dropout`` and the biases."""
    arch: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    rows: int
    positions: int
    tied: bool
    attention_dropout: float = 0.0
    qkv_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_fields(cls, c: dict) -> Dims:
        """From config.json fields; a missing field raises ``KeyError`` (the caller names the model)."""
        if c.get("model_type") == "gpt2":
            d = c["n_embd"]
            return cls("gpt2", c["n_layer"], d, c.get("n_inner") or 4 * d, c["n_head"], c["n_head"], d // c["n_head"],
                       c["vocab_size"], c["n_positions"], True, float(c.get("attn_pdrop", 0.1)))
        d, heads = c["hidden_size"], c["num_attention_heads"]
        return cls(c.get("model_type", "llama"), c["num_hidden_layers"], d, c["intermediate_size"], heads,
                   c.get("num_key_value_heads") or heads, c.get("head_dim") or d // heads, c["vocab_size"],
                   c.get("max_position_embeddings", 2048), bool(c.get("tie_word_embeddings", False)),
                   float(c.get("attention_dropout", 0.0) or 0.0),
                   c.get("model_type") == "qwen2" or bool(c.get("attention_bias")), bool(c.get("attention_bias")),
                   bool(c.get("mlp_bias")))

    @property
    def gpt2(self) -> bool:
        return self.arch == "gpt2"

    @property
    def attention_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int, int]]:
        """The linear modules of one layer by name: (in, out, count per layer); GPT-2's ``c_proj`` is two modules
        (attention and MLP)."""
        d, inner = self.hidden, self.intermediate
        if self.gpt2:
            return {"c_attn": (d, 3 * d, 1), "attn.c_proj": (d, d, 1), "c_fc": (d, inner, 1),
                    "mlp.c_proj": (inner, d, 1)}
        return {"q_proj": (d, self.attention_width, 1), "k_proj": (d, self.kv_width, 1),
                "v_proj": (d, self.kv_width, 1), "o_proj": (self.attention_width, d, 1),
                "gate_proj": (d, inner, 1), "up_proj": (d, inner, 1), "down_proj": (inner, d, 1)}

    @property
    def layer_linear(self) -> int:
        """Parameters of one layer's linear modules (weights and biases): what autocast casts to bf16."""
        if self.gpt2:
            d, inner = self.hidden, self.intermediate
            return (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
        d, inner = self.hidden, self.intermediate
        attention = d * self.attention_width + 2 * d * self.kv_width + self.attention_width * d
        attention += (self.attention_width + 2 * self.kv_width) * self.qkv_bias + d * self.attention_bias
        return attention + 3 * d * inner + (2 * inner + d) * self.mlp_bias

    @property
    def layer(self) -> int:
        """Parameters of one layer (linear modules and norms)."""
        return self.layer_linear + (4 if self.gpt2 else 2) * self.hidden

    @property
    def embeddings(self) -> int:
        """Input embedding parameters (GPT-2: tokens and positions)."""
        return self.rows * self.hidden + (self.positions * self.hidden if self.gpt2 else 0)

    @property
    def head(self) -> int:
        """Output head parameters beyond the input embeddings (0 when tied)."""
        return 0 if self.tied else self.rows * self.hidden

    @property
    def parameters(self) -> int:
        return self.embeddings + self.layers * self.layer + (2 if self.gpt2 else 1) * self.hidden + self.head

    @property
    def largest(self) -> int:
        """The largest single parameter tensor (the embedding matrix for every model of the paper)."""
        return max(self.rows * self.hidden, self.hidden * self.intermediate, 3 * self.hidden * self.hidden)

    def lora_parameters(self, rank: int, modules: list[str]) -> int:
        """Parameters of LoRA adapters of ``rank`` on ``modules`` (peft's names: a module matches by its name's
        end) in every layer: ``rank x (in + out)`` each."""
        return self.layers * sum(rank * (i + o) * n for i, o, n in self._lora_modules(modules))

    def _lora_modules(self, modules: list[str]) -> list[tuple[int, int, int]]:
        shapes = self.module_shapes()
        found = []
        for name in modules:
            hits = [s for key, s in shapes.items() if key == name or key.endswith("." + name)]
            if not hits:
                raise ValueError(f"LoRA target module {name!r} is not a linear module of a {self.arch} layer "
                                 f"(expected one of {sorted({k.split('.')[-1] for k in shapes})})")
            found += hits
        return found

    def at_depth(self, layers: int) -> Dims:
        """The same model with ``layers`` layers (the rehearsal's cut)."""
        return replace(self, layers=layers)


# ---------------------------------------------------------------------------------------------------------------
# Tensors per token


def dtype_bytes(bf16: bool) -> int:
    """Bytes per element of the weights a precision holds frozen (and of its autocast activations): bf16 or fp32."""
    return 2 if bf16 else 4


def mapped_embedding(m: Dims, held: int, stored: int, device: str) -> int:
    """The bytes of ``m``'s input embedding that may stay unmapped (``Prediction.mapped``): on a CPU a model held in
    its files' dtype (``held`` == ``stored`` bytes) stays memory-mapped, and the jobs read only their tokens' rows of
    an untied input embedding; a tied one is read whole through the head, a cast is a copy, a GPU holds a copy."""
    return m.rows * m.hidden * held if device == "cpu" and held == stored and not m.tied else 0


def activation_bytes(m: Dims, tokens: int, length: int, bf16: bool, device: str, lora: tuple[int, list[str]] | None
                     = None) -> float:
    """Bytes autograd keeps for the backward pass of ``m``'s body over ``tokens`` = micro batch x padded ``length``
    positions (``bf16``: under bf16 autocast; ``lora``: (rank, target modules) with the base frozen).

    Per layer and token, counted from the tensors each family's layer saves (``tests/test_memory.py`` counts them
    with ``torch.autograd.graph.saved_tensors_hooks``); ``c`` is the matmul input's bytes (2 under autocast, else
    4); norms and the residual stream stay float32:
    - LLaMA family (LLaMA, Mistral, Qwen2): two RMSNorms (each its input, and, when its weight trains, the
      normalised input: 4d or 8d); the q/k/v input (4d, or one bf16 cast per projection, 3 x 2d); attention q, k and
      v expanded to every head, and its output (4 c x heads x head_dim), log-sum-exp (4 per head) and padding mask
      ([B, 1, T, T], c per entry); the MLP input (4d, or two casts, 2 x 2d) and gate, up, activation and product
      (4 c x intermediate).
    - GPT-2: two LayerNorms, the attention's and MLP's projection inputs, the residual and dropout outputs (28d in
      fp32; 18d under autocast, the matmul inputs cast), the MLP's pre- and post-GELU (2 c x intermediate); with
      attention dropout on a CPU, the math attention keeps q, k, v (12d) and the scores, their softmax and dropout
      (3 x 4 x heads x T per token); elsewhere memory-efficient attention keeps q, k, v, output (4 c d) and its
      log-sum-exp. With a frozen base: the LayerNorms' inputs (2 c d) and the GELU's input (c x intermediate).
    - A frozen (LoRA) base saves no input of its linear modules (nor the MLP's product, which only the frozen down
      projection reads), its norms only their input (the first layer's, reading the frozen embeddings, nothing);
      each adapter saves its dropout's output (c x in) and its down-projection (c x rank), and beyond the first
      layer its dropout's noise (a CPU's float32, 4 x in; a GPU's byte mask, in).
    Outside the layers: the final norm (8d; 4d frozen) and the ids (8).
    """
    d, inner, c = m.hidden, m.intermediate, dtype_bytes(bf16)
    heads, width = m.heads, m.attention_width
    found = m._lora_modules(lora[1]) if lora else []
    adapters = sum((c * i + c * lora[0]) * n for i, _, n in found)
    # the adapters' dropout beyond the first layer (whose input, the frozen embeddings', takes no gradient): a CPU
    # keeps its float32 noise, a GPU's fused dropout a byte mask
    noise = sum((4 if device == "cpu" else 1) * i * n for i, _, n in found)
    if m.gpt2:
        if device == "cpu" and m.attention_dropout > 0:
            attention = 12 * d + 12 * heads * length
        else:  # q, k, v, output in the matmul dtype instead of the math path's scores and three float32 tensors
            attention = 4 * c * d + 4 * heads
        if lora:  # the two LayerNorms' inputs (in the frozen base's dtype) and the GELU's input
            per = attention + 2 * c * d + c * inner + adapters + noise
            return tokens * (m.layers * per - noise + 2 * c * d + 8)
        per = attention + (18 if bf16 else 28) * d + 2 * c * inner
        return tokens * (m.layers * per + 8 * d + 8)
    frozen = lora is not None
    per = (8 if frozen else 16) * d + 4 * c * width + 4 * heads + c * length + (3 if frozen else 4) * c * inner
    if frozen:
        per += adapters + noise
    else:
        per += (3 * 2 * d if bf16 else 4 * d) + (2 * 2 * d if bf16 else 4 * d)
    return tokens * (m.layers * per - (4 * d + noise if frozen else 0) + (4 if frozen else 8) * d + 8)


def generation_bytes(m: Dims, batch: int, prompt: int, new: int, weight_bytes: int) -> float:
    """Bytes of sampling ``batch`` prompts of ``prompt`` tokens for ``new`` tokens (``repro.generation``): the KV
    cache (2 x layers x kv width per position, in the weights' dtype), the prompt forward's widest transients (a
    layer's MLP: 3 x intermediate, and a few d-wide tensors, per prompt position), its attention mask, and the
    last position's logits as float32 with their processed copy and softmax (3 x vocabulary per row)."""
    positions = prompt + new
    kv = 2 * m.layers * m.kv_width * batch * positions * weight_bytes
    forward = batch * prompt * (3 * m.intermediate + 4 * m.hidden) * weight_bytes + batch * positions ** 2 * 4
    return kv + forward + 3 * batch * m.rows * 4


# ---------------------------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class Batch:
    """One micro batch: ``sequences``, padded ``length``, the student's ``rows`` (response positions) and, for a
    cross-vocabulary pair, the teacher's tokenisation's ``teacher_length`` and ``teacher_rows``; ``longest_rows``:
    the most response positions of one of its sequences."""
    sequences: int
    length: int
    rows: int
    teacher_length: int | None = None
    teacher_rows: int | None = None
    longest_rows: int | None = None  # the most response positions of one sequence (default: all ``rows``)

    @property
    def tokens(self) -> int:
        return self.sequences * self.length


@dataclass(frozen=True)
class Sampling:
    """A sampling pass: ``batch`` prompts of ``prompt`` tokens, ``new`` tokens each."""
    batch: int
    prompt: int
    new: int


@dataclass(frozen=True)
class Prediction:
    """A job's predicted peak (``total`` bytes), the phase where it is reached and that phase's components;
    ``mapped``: the bytes of memory-mapped file pages in ``total`` that the job may leave unmapped (its peak lies
    between ``total - mapped`` and ``total``)."""
    total: float
    phase: str
    components: dict[str, float]
    phases: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)  # each phase's components
    mapped: float = 0.0

    @property
    def gb(self) -> float:
        return self.total / GB

    def smallest_gpu(self, sizes: tuple[int, ...] = GPU_SIZES_GB) -> int | None:
        """The smallest of ``sizes`` (GB) the peak fits, or None."""
        return next((s for s in sizes if self.total <= s * GB), None)


def _peak(phases: dict[str, dict[str, float]], extra: dict[str, float]) -> Prediction:
    """The largest phase, each with the ``extra`` components of every phase (on a CPU: the tokenizers, and the
    runtime's pages, which the computing phases touch, not the loading ones)."""
    full = {name: {**parts, **{k: v for k, v in extra.items() if k != "runtime" or "loading" not in name}}
            for name, parts in phases.items()}
    totals = {name: sum(parts.values()) for name, parts in full.items()}
    phase = max(totals, key=totals.get)
    return Prediction(totals[phase], phase, full[phase], totals, full)


# Host memory of the tokenizers a job loads (the ``tokenizers`` library's objects), from the sizes of their
# tokenizer.json files: a few MB once, about 11.9 bytes per file byte for the largest and 3.2 for each other (the
# later ones reuse the heap the first one's loading freed), and 4.2 per file byte more while one loads. Measured in one
# process loading the real GPT-2, GPT-2 again, LLaMA-2, Mistral and Qwen1.5 tokenizers (3.5-3.6 MB files; Qwen1.5's
# 18.7 MB): 47.6, 11.4, 14.8, 24.3 and 176 MB retained, GPT-2 alone 47.6 MB (63 MB at its peak), Qwen1.5 alone 227 MB
# (305 MB). Without the file, ``TOKENIZER_FILE_BYTES`` per token id stands in (70-123 bytes in those four).
TOKENIZER_LIBRARY = 5.3e6
TOKENIZER_LARGEST = 11.9
TOKENIZER_OTHER = 3.2
TOKENIZER_LOADING = 4.2
TOKENIZER_FILE_BYTES = 115


def tokenizer_bytes(files: list[int]) -> float:
    """Host memory retained by tokenizers loaded from tokenizer.json files of ``files`` bytes."""
    return TOKENIZER_LIBRARY + TOKENIZER_LARGEST * max(files) + TOKENIZER_OTHER * (sum(files) - max(files))


def tokenizer_file_bytes(ids: int) -> int:
    """The size a tokenizer.json of ``ids`` token ids is assumed to have when it cannot be read."""
    return ids * TOKENIZER_FILE_BYTES


@dataclass(frozen=True)
class TrainJob:
    """One training job (``repro.cells.train_cell``), per process.

    ``method``: a ``repro.names.METHODS`` key; ``teacher``: the teacher's sizes (a method that reads one);
    ``lora``: (rank, target modules) or None; ``bf16``: bf16 autocast (frozen weights held in bf16);
    ``batch``: the largest micro batch; ``accumulation``: micro batches per process and step; ``processes`` and
    ``shard_optimizer`` as the training settings; ``teacher_cache``: the teacher's states come from the cache;
    ``student_ids``/``teacher_ids``: the tokenizers' ids (the logits are cut to them; ULD and CMA's teacher side
    keep the head's rows); ``dev``: the dev sampling; ``seqkd``: SeqKD's teacher sampling; ``stored_bytes``: the
    dtype bytes of the student's checkpoint files (a conversion on loading holds both), ``teacher_stored_bytes`` the
    teacher's (default: the same); ``tokenizer_files``: the sizes of
    the student's and teacher's tokenizer.json (host memory); ``moments``: AdamW's moments exist (a step after the
    first); ``earlier_gradients``: the micro batch finds the gradients of earlier ones (default: with gradient
    accumulation or several processes, the worst case); ``correct_share``: DSKD-CMA's share of rows whose
    projected teacher predicts the label (its divergence runs there); ``aligned_share``: MinED's rows aligned
    one-to-one; ``vocab_map``: MinED's vocabulary map is computed in the job (not yet cached), or how many teacher
    tokens it compares by edit distance (those without an exact match); ``merge``: a LoRA job merges its adapter
    into its base after training (a teacher, whose students read the merged weights; a LoRA student keeps its
    adapter, merged by its readers: ``evaluate_peak(adapter=True)``); ``mmap_threshold``: glibc's mmap threshold the
    job runs with (``fix_mmap_threshold``; None: glibc's dynamic default), which decides what its heap keeps."""
    student: Dims
    batch: Batch
    method: str = "sft"
    teacher: Dims | None = None
    lora: tuple[int, list[str]] | None = None
    bf16: bool = False
    accumulation: int = 1
    processes: int = 1
    shard_optimizer: bool = False
    teacher_cache: bool = False
    student_ids: int | None = None
    teacher_ids: int | None = None
    dev: Sampling | None = None
    seqkd: Sampling | None = None
    stored_bytes: int = 4
    teacher_stored_bytes: int | None = None
    tokenizer_files: tuple[int | None, int | None] = (None, None)
    moments: bool = True
    earlier_gradients: bool | None = None
    correct_share: float = 1.0
    aligned_share: float = 1.0
    vocab_map: bool | int = True
    merge: bool = True
    mmap_threshold: int | None = MMAP_THRESHOLD

    def __post_init__(self):
        traits = names.method(self.method)
        if traits.needs_teacher and self.teacher is None:
            raise ValueError(f"method {self.method!r} reads a teacher: TrainJob needs its sizes (teacher=)")


def _projectors(method: str, d_s: int, d_t: int) -> int:
    """Parameters of the method's trained modules (``repro.methods``: DSKD's projectors, DSKD-CMA's query and
    projectors)."""
    if method in ("dskd", "dskd_student_space"):
        return (d_t * d_s + d_s) + (0 if method == "dskd_student_space" else d_s * d_t + d_t)
    if method == "dskd_cma":
        return (2 * d_s * 2 * d_t + 2 * d_t) + (d_t * d_s + d_s) + (d_s * d_t + d_t)
    return 0


def loss_bytes(job: TrainJob) -> tuple[dict[str, float], dict[str, float]]:
    """The vocabulary-sized tensors of one micro batch's loss (``repro.lean``, ``repro.methods``): those held at
    the end of its forward pass, and those at the start of its backward pass, by name. ``R``: the student's response
    rows, ``V`` its logits' width (the tokenizer's ids), ``c`` the logits' bytes (2 under autocast).

    Every method: the student's logits ``[R, V]`` (c) and the lean loss's one float32 gradient buffer ``[R, V]``;
    the logits are freed when the loss returns, and the backward pass casts the buffer to the logits' dtype and
    computes the head's weight gradient (``[V, d]``, with the full-size copy of the cut head's slice) while the
    activations are still held. A teacher's logits come a block of rows at a time (``LazyLogits``: 2^22 entries).
    DSKD: the detached projected-teacher logits ``[R, V]`` too (the head passes go by blocks). DSKD-CMA: besides,
    its cross-entropy has a buffer of its own, and the divergence on the rows the projected teacher predicts right
    copies both logits there and has its own buffer; its backward spreads that gradient back into ``[R, V]``; the
    attention's [B, T_s, T_t] tensors and the projections' per-position inputs are kept. ULD: the teacher's logits
    ``[R_t, V_t]`` whole, and per paired row the softmax (4 V) and sort indices (8 V) of the student's side and the
    padded difference (4 x the wider vocabulary) kept for the backward; the longest sequence's teacher side
    (softmax, sorted values and indices: 16 V_t per row) and padded differences while it is computed; its backward
    gathers the gradients of the student's logits in [R, V] sums. MinED: the official target's logits ``[R, V]``
    (fp32) and the teacher's logits on the aligned rows ``[A, V_t]``; while the targets are written, the gathered
    first-id logits and their masked copy ``[A, V]``."""
    s, t, b = job.student, job.teacher, job.batch
    c = frozen = dtype_bytes(job.bf16)
    rows, vocab = b.rows, job.student_ids or s.rows
    full = rows * vocab
    fwd = {"student logits": full * c, "logit gradient buffer": full * 4}
    bwd = {"logit gradient buffer": full * 4}
    if c != 4:
        bwd["logit gradient cast"] = full * c
    if not job.lora:  # the head's weight gradient (and, under autocast, the head's bf16 copy kept from the forward)
        bwd["head gradient"] = vocab * s.hidden * 4 + s.rows * s.hidden * 4 + (2 * vocab * s.hidden * c if c != 4
                                                                                 else 0)
        if c != 4:
            fwd["head copy"] = vocab * s.hidden * c
    method = job.method
    if t is None or not names.method(method).needs_teacher or names.method(method).black_box:
        return fwd, bwd
    t_vocab = job.teacher_ids or t.rows
    t_rows = b.teacher_rows if b.teacher_rows is not None else rows
    t_length = b.teacher_length or b.length
    if method == "kd":  # a block of the teacher's logits (rows of about 2^22 entries)
        fwd["teacher logit block"] = HEAD_BLOCK_ENTRIES * frozen
    elif method in ("dskd", "dskd_student_space"):
        fwd["projected teacher logits"] = full * c
        # the teacher-space pass: a block of the projected student's logits, its gradient and the teacher's, whose
        # next block is computed while the last is held
        fwd["head pass blocks"] = 4 * HEAD_BLOCK_ENTRIES * 4
    elif method == "dskd_cma":
        correct = job.correct_share * rows * vocab
        fwd["projected teacher logits"] = full * c
        fwd["divergence rows"] = correct * (2 * c + 4)
        pairs = b.sequences * b.length * t_length
        positions = (b.tokens * (2 * s.hidden + 3 * t.hidden) + b.sequences * t_length * (6 * t.hidden + s.hidden)) * 4
        fwd["cross-model attention"] = 6 * pairs * 4 + positions
        bwd.update({"divergence buffer": correct * 4, "divergence gradient": full * c,
                    "cross-model attention": 2 * pairs * 4 + positions})
    elif method == "uld":
        width = max(vocab, t.rows)
        paired = min(rows, t_rows)
        longest = min(b.longest_rows or paired, paired)
        fwd["teacher logits"] = t_rows * t.rows * frozen
        fwd["sorted distributions"] = paired * (12 * vocab + 4 * width)
        # the sequence in hand: its teacher side's softmax, sorted values and indices beside the student's padded
        # distribution, or both padded distributions, their difference and its absolute value
        fwd["longest sequence"] = longest * max(16 * t.rows + 4 * width, 16 * width)
        bwd["sorted distributions"] = paired * (12 * vocab + 4 * width)
        bwd["logit gradient sums"] = 2 * full * 4
    elif method == "mined":
        aligned = job.aligned_share * rows
        fwd["target logits"] = full * 4
        fwd["aligned teacher logits"] = aligned * t_vocab * frozen + max(aligned * vocab * 8 - full * 4, 0)
    return fwd, bwd


def _tokenizers(job: TrainJob) -> tuple[float, float]:
    """Host memory of the job's tokenizers: (retained, the extra while the student's loads)."""
    s_file, t_file = job.tokenizer_files
    files = [s_file or tokenizer_file_bytes(job.student_ids or job.student.rows)]
    if job.teacher is not None and names.method(job.method).needs_teacher:
        files.append(t_file or tokenizer_file_bytes(job.teacher_ids or job.teacher.rows))
    return tokenizer_bytes(files), TOKENIZER_LOADING * files[0]


def train_peak(job: TrainJob, device: str) -> Prediction:
    """The predicted peak memory of a training job on ``device`` (``"gpu"``: device memory; ``"cpu"``: growth of
    the resident memory, with ``CPU_RUNTIME_BYTES`` and the tokenizers), with its phase and components (bytes).

    Phases: ``forward`` and ``backward`` of a micro batch in a step after the first (AdamW's moments exist; with
    gradient accumulation the gradients of the step's earlier micro batches too), the ``optimiser step``, the
    ``dev sampling``; on a CPU also ``loading`` (each checkpoint converted from its stored dtype holds both copies
    for a moment), SeqKD's ``teacher sampling``, MinED's ``vocabulary map`` and the ``LoRA merge``. On a CPU the C
    allocator keeps what a step's activations and the teacher's sampling freed (blocks below its mmap threshold)
    for the later phases: all of them under glibc's dynamic threshold, else those whose blocks (the micro batch's
    tokens by the hidden size; the sampled logits) are below the job's threshold. A frozen model loaded in its files'
    dtype stays memory-mapped, and only the pages read are resident: of an untied input embedding (a live teacher's,
    a LoRA student's frozen base's) the rows of the batches' tokens and what the kernel maps with them (as in
    ``cache_peak``), counted whole and named ``mapped``."""
    s, t, b = job.student, job.teacher, job.batch
    traits = names.method(job.method)
    frozen = dtype_bytes(job.bf16)
    teacher_stored = job.teacher_stored_bytes or job.stored_bytes
    lora_params = s.lora_parameters(*job.lora) if job.lora else 0
    projectors = _projectors(job.method, s.hidden, t.hidden if t is not None else 0)
    trained = (lora_params if job.lora else s.parameters) + projectors
    student_bytes = (s.parameters * frozen + lora_params * 4) if job.lora else s.parameters * 4
    weights = {"student weights": student_bytes, "projectors": projectors * 4}
    teacher_parts = 0
    if t is not None and traits.needs_teacher and not traits.black_box:
        if job.teacher_cache:  # the head, and DSKD-CMA's input embeddings
            teacher_parts = t.rows * t.hidden * (2 if traits.teacher_embeddings and not t.tied else 1)
            weights["teacher head"] = teacher_parts * frozen
        else:
            teacher_parts = t.parameters
            weights["teacher"] = t.parameters * frozen
    shards = job.processes if job.shard_optimizer and job.processes > 1 else 1
    moments = {"AdamW moments": 2 * trained * 4 / shards}
    adam = moments if job.moments else {}
    grads = trained * 4
    acts = activation_bytes(s, b.tokens, b.length, job.bf16, device, job.lora)
    casts = 0 if job.lora or not job.bf16 else (s.layers * s.layer_linear + projectors) * 2
    fwd_vocab, bwd_vocab = loss_bytes(job)
    step = {**weights, **adam, "activations": acts, "autocast weight copies": casts}
    earlier = job.earlier_gradients if job.earlier_gradients is not None else (job.accumulation > 1
                                                                                or job.processes > 1)
    if earlier:  # the step's earlier micro batches' gradients
        step["gradients"] = grads
    forward = {**step, **fwd_vocab}
    if "teacher" in weights:  # a live teacher's forward (no grad): its widest transients and its hidden states
        t_len = b.teacher_length or b.length
        forward["teacher forward"] = b.sequences * t_len * (3 * t.intermediate + 5 * t.hidden) * frozen
    # The optimiser step: every gradient, AdamW's temporaries (on a GPU one fp32 copy of the moments' square roots per
    # parameter group; on a CPU, parameter by parameter, two of the largest), the data-parallel exchange's flat copy.
    optimiser = {"gradients": grads,
                 "optimiser temporaries": trained * 4 if device == "gpu" else
                 2 * (min(trained, s.largest) if not job.lora else lora_params) * 4}
    if job.processes > 1:
        optimiser["gradient exchange"] = grads
    phases = {"forward": forward, "backward": {**step, **bwd_vocab},
              "optimiser step": {**weights, **moments, **optimiser}}
    if job.dev is not None:
        phases["dev sampling"] = {**weights, **moments, "autocast weight copies": casts,
                                  "sampling": generation_bytes(s, job.dev.batch, job.dev.prompt, job.dev.new, frozen)}
    if job.method == "seqkd" and t is not None and job.seqkd is not None:  # before training: the teacher samples
        phases["teacher sampling"] = {"student weights": student_bytes,
                                      "teacher": t.parameters * frozen,
                                      "sampling": generation_bytes(t, job.seqkd.batch, job.seqkd.prompt,
                                                                   job.seqkd.new, frozen)}
        if device == "cpu" and teacher_stored != frozen:
            phases["teacher loading"] = {"student weights": student_bytes, "teacher": t.parameters * frozen,
                                         "stored copy": t.parameters * teacher_stored}
    extra = {}
    if device == "cpu":
        retained, loading = _tokenizers(job)
        extra = {"runtime": CPU_RUNTIME_BYTES, "tokenizers": retained}
        # what the allocator keeps of freed blocks: the teacher's sampling (before training), a step's activations;
        # with a fixed mmap threshold only blocks below it come from (and stay in) the heap
        def kept(total: float, block: float) -> float:
            return total if job.mmap_threshold is None or block < job.mmap_threshold else 0

        sampled = 0
        if "teacher sampling" in phases:
            sampled = kept(phases["teacher sampling"]["sampling"], job.seqkd.batch * t.rows * frozen)
        acts_kept = kept(acts, b.tokens * s.hidden * frozen)
        for name in ("forward", "backward"):
            phases[name]["kept by the allocator"] = max(sampled - acts_kept, 0)
        for name in ("optimiser step", "dev sampling"):
            if name in phases:
                phases[name]["kept by the allocator"] = max(sampled, acts_kept)
        held = frozen if job.lora else 4  # the student is loaded in fp32, a LoRA base in the frozen dtype
        phases["loading"] = {"student weights": s.parameters * held, "tokenizer loading": loading,
                             "stored copy": s.parameters * job.stored_bytes if job.stored_bytes != held else 0}
        if teacher_parts:  # the teacher (or its head and embeddings, a matrix at a time) after the student
            stored = teacher_stored if teacher_stored != frozen else 0
            piece = teacher_parts if "teacher" in weights else t.rows * t.hidden
            phases["teacher loading"] = {"student weights": student_bytes, **{k: v for k, v in weights.items()
                                                                               if k.startswith("teacher")},
                                         "stored copy": piece * stored}
        if job.method == "mined" and job.vocab_map and t is not None:
            chunk = MAP_CHUNK if job.vocab_map is True else min(job.vocab_map, MAP_CHUNK)
            phases["vocabulary map"] = {**weights, "edit distances": chunk * (job.student_ids or s.rows) * 4}
        if job.lora and job.merge:  # after training (AdamW freed): an fp32 copy of the base beside the trained model
            phases["LoRA merge"] = {**weights, "fp32 base": s.parameters * 4,
                                    "stored copy": s.parameters * job.stored_bytes if job.stored_bytes != 4 else 0,
                                    "kept by the allocator": max(sampled, acts_kept)}
    mapped = mapped_embedding(t, frozen, teacher_stored, device) if "teacher" in weights else 0
    if job.lora:  # the frozen base
        mapped += mapped_embedding(s, frozen, job.stored_bytes, device)
    return replace(_peak(phases, extra), mapped=mapped)


def evaluate_peak(model: Dims, sampling: Sampling, bf16: bool, device: str, stored_bytes: int = 4,
                  tokenizer_file: int | None = None, adapter: bool = False) -> Prediction:
    """The predicted peak of an evaluation job (``repro.cells.evaluate_cell``): the model in the precision's dtype
    and its sampling buffers; on a CPU, loading a checkpoint stored in another dtype holds both for a moment, and
    the tokenizer is held. ``adapter``: the model is a LoRA student's adapter, merged on loading
    (``repro.models.load_model``): its base loaded in fp32 (``stored_bytes``: the base's files), merged, then cast
    to the precision's dtype, so the loading holds the fp32 base beside the larger of its stored and cast copies.

    On a CPU a model loaded in its files' dtype stays memory-mapped (as in ``cache_peak``): sampling reads its whole
    head, but of an untied input embedding only the rows of the prompts' and samples' tokens, and how much of it
    the kernel maps with them depends on the page cache's folios (the rehearsal's LLaMA-2 teacher, 262 MB of bf16
    embedding: 1062 MB predicted whole, 828 MB measured on the CI machine, within 15% of the whole locally):
    counted whole, and named ``mapped``."""
    weight_bytes = dtype_bytes(bf16)
    mapped = 0 if adapter else mapped_embedding(model, weight_bytes, stored_bytes, device)
    phases = {"sampling": {"weights": model.parameters * weight_bytes,
                           "sampling": generation_bytes(model, sampling.batch, sampling.prompt, sampling.new,
                                                        weight_bytes)}}
    extra = {}
    if device == "cpu":
        extra = {"runtime": CPU_RUNTIME_BYTES,
                 "tokenizers": tokenizer_bytes([tokenizer_file or tokenizer_file_bytes(model.rows)])}
        if adapter:
            copy = max(stored_bytes if stored_bytes != 4 else 0, weight_bytes if weight_bytes != 4 else 0)
            phases["loading"] = {"fp32 base": model.parameters * 4, "stored copy": model.parameters * copy}
        else:
            phases["loading"] = {"weights": model.parameters * weight_bytes,
                                 "stored copy": model.parameters * stored_bytes if stored_bytes != weight_bytes else 0}
    return replace(_peak(phases, extra), mapped=mapped)


def cache_peak(teacher: Dims, batch: Batch, examples: int, response_rows: int, bf16: bool, device: str,
               cma_length: int | None = None, stored_bytes: int = 4, tokenizer_file: int | None = None) -> Prediction:
    """The predicted peak of a teacher-state cache job (``repro.teacher_states``): the teacher, one batch's forward
    transients (``batch``; with DSKD-CMA's official statistics, ``cma_length``: batches padded to max_length) and
    its final hidden states; on a CPU also the tokenizer and the states of all ``examples`` (``response_rows`` in
    all), held as rows and then concatenated (twice their size, in the teacher's dtype).

    On a CPU a teacher loaded in its files' dtype (``stored_bytes`` the precision's) stays memory-mapped: only the
    pages read are resident. The job runs the decoder alone (``repro.methods.final_hidden``; DSKD-CMA's statistics
    too), so a head apart from the input embedding is never read; of the input embedding it reads the rows of
    the data's tokens, and how much of it the kernel maps with them depends on the page cache's folios (LLaMA-2's
    262 MB embedding: 54 MB resident for a file read back; the same job in the workflow, right after the merge wrote
    the file, held 166 MB more): counted whole, and named ``mapped`` (the peak's lower bound leaves it out)."""
    weight_bytes = dtype_bytes(bf16)
    length = max(batch.length, cma_length or 0)
    forward = batch.sequences * length * (3 * teacher.intermediate + 5 * teacher.hidden) * weight_bytes
    forward += batch.sequences * length ** 2 * weight_bytes
    held = teacher.parameters * weight_bytes
    mapped = mapped_embedding(teacher, weight_bytes, stored_bytes, device)  # the input embedding, read in part
    held -= mapped  # untied and memory-mapped, the head (as large) is never read
    phases = {"forward": {"teacher": held, "forward": forward}}
    extra = {}
    if device == "cpu":
        extra = {"runtime": CPU_RUNTIME_BYTES,
                 "tokenizers": tokenizer_bytes([tokenizer_file or tokenizer_file_bytes(teacher.rows)])}
        phases["forward"]["states"] = response_rows * teacher.hidden * weight_bytes
        phases["concatenation"] = {"teacher": held, "states": 2 * response_rows * teacher.hidden * weight_bytes}
        phases["loading"] = {"teacher": held,
                             "stored copy": teacher.parameters * stored_bytes if stored_bytes != weight_bytes else 0}
    return replace(_peak(phases, extra), mapped=mapped)


# Host memory: what a cluster job asks for (Snakemake's ``mem_mb``, sbatch --mem). A job's process holds, besides
# what the model above counts, its baseline after the imports (python, torch, transformers: 456-548 MB measured here,
# ``rss_baseline`` of the jobs' memory records); on a GPU node also the CUDA runtime's host side (its libraries and
# the context's host buffers), an allowance not measured here (no GPU: scripts/gpu_smoke.py records it).
PROCESS_BASELINE_BYTES = 0.6e9
CUDA_HOST_BYTES = 2.5e9
# The Snakemake process that runs the job's rule on its node beside the job's own (its imports: 168 MB measured here).
WORKFLOW_PROCESS_BYTES = 0.3e9
HOST_MARGIN = 1.25
# The components of the CPU model that live on the host when the job computes on a GPU (models are loaded on the
# host and then moved; a LoRA adapter is merged into an fp32 copy of its base on the host; the cache job's states
# and MinED's edit distances are gathered there): in a loading phase every component, elsewhere these.
HOST_COMPONENTS = ("tokenizers", "tokenizer loading", "stored copy", "fp32 base", "edit distances", "states")


def host_bytes(cpu: Prediction, gpu: bool) -> float:
    """The host memory of one process of a job whose CPU prediction is ``cpu`` (``device="cpu"``): on a CPU the
    prediction itself; on a GPU node the largest of its phases as far as the host holds it (``HOST_COMPONENTS``,
    every component of a loading phase, where the model sits on the host before it moves). With the process's
    baseline (and the CUDA runtime's host side on a GPU node); no margin."""
    if not gpu:
        return cpu.total + PROCESS_BASELINE_BYTES
    def on_host(phase: str, component: str) -> bool:
        if phase == "teacher loading":  # the student is on the GPU by then
            return component != "student weights"
        return "loading" in phase or component in HOST_COMPONENTS

    held = max(sum(v for k, v in parts.items() if on_host(phase, k)) for phase, parts in cpu.breakdown.items())
    return held + PROCESS_BASELINE_BYTES + CUDA_HOST_BYTES


def host_mb(cpu: Prediction, gpu: bool, processes: int = 1) -> int:
    """``mem_mb`` of a job of ``processes`` data-parallel processes: their ``host_bytes`` and the workflow's process
    that runs them, with ``HOST_MARGIN``."""
    return ceil_mb(HOST_MARGIN * (processes * host_bytes(cpu, gpu) + WORKFLOW_PROCESS_BYTES))


def describe(prediction: Prediction, top: int = 4) -> str:
    """``12.3 GB (step: student weights 2.2, activations 5.1, ...)``: the peak and its largest components."""
    parts = sorted(prediction.components.items(), key=lambda kv: -kv[1])[:top]
    return f"{prediction.gb:.1f} GB ({prediction.phase}: " + ", ".join(f"{k} {v / GB:.2f}" for k, v in parts) + ")"


def ceil_mb(nbytes: float) -> int:
    """Bytes as whole megabytes (1e6 bytes), rounded up: Snakemake's ``mem_mb``."""
    return math.ceil(nbytes / 1e6)
