"""Every settings class and its defaults, in one torch-free place: a run's training settings (``TrainSettings``,
the config's ``training`` block merged per pair and role by ``role_training``), the pretraining of built bases
(``PretrainSettings``), the figures' (``ToySettings`` for Figure 1, ``JudgeSettings`` for Figure 2,
``FIGURE_DEFAULTS`` for all three). A default is written once, here (or in the schema); torch-free code reads a
training key through ``training_value``. The classes that a config section fills check their values against that
section of the schema (``repro.schema.check_section``), so that Python and the config file obey the same bounds.
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields

from .names import CHOICES
from .schema import check_section, section_keys


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
    kd_temperature: float = 2.0
    projector_lr: float = 1e-3
    checkpoint_every: int = 0
    # Where the official code and another choice differ (README "Fidelity"; defaults: repro.names.CHOICES):
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
    # the dtype a trained model is saved in (a full fine-tune's best checkpoint, a merged LoRA teacher; a LoRA
    # student's adapter stays fp32): "auto" = the dtype its readers hold it in (frozen_dtype), or float32/bfloat16
    checkpoint_dtype: str = "auto"
    processes: int = 1  # data-parallel processes of the job (GPUs); the global batch is split among them
    shard_optimizer: bool = False  # ZeRO stage 1 with several processes: AdamW state split across processes

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.checkpoint_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"training.checkpoint_dtype must be 'auto', 'float32' or 'bfloat16', "
                             f"got {self.checkpoint_dtype!r}")
        if self.on_divergence not in ("warn", "stop"):
            raise ValueError(f"training.on_divergence must be 'warn' or 'stop', got {self.on_divergence!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if (problem := batch_problem(vars(self))) is not None:
            raise ValueError(problem)
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

    def frozen_dtype(self, on_gpu: bool) -> str:
        """The dtype frozen weights (a teacher, a LoRA base, a merged LoRA teacher) are held and saved in:
        ``bfloat16`` under bf16 autocast, else ``float32``."""
        return "bfloat16" if self.mixed_precision(on_gpu) == "bf16" else "float32"

    def saved_dtype(self, on_gpu: bool) -> str:
        """The dtype a trained model is saved in (``checkpoint_dtype``; ``auto``: ``frozen_dtype``, the dtype its
        students and its evaluation hold it in, so that nothing they read is lost: bf16 on a GPU, half the disk)."""
        return self.frozen_dtype(on_gpu) if self.checkpoint_dtype == "auto" else self.checkpoint_dtype

    def divergence_options(self) -> dict:
        """Per-divergence keyword options: the skew weight of skl/srkl and AKL's head/tail threshold."""
        return {"skl": {"skew": self.skew}, "srkl": {"skew": self.skew}, "akl": {"threshold": self.akl_threshold}}


# The default of every training key that has one (from TrainSettings' fields).
TRAINING_DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory()
                     for f in fields(TrainSettings) if f.default is not MISSING or f.default_factory is not MISSING}


def training_value(training: dict, key: str):
    """``training[key]``, or the key's default (``TrainSettings``; a copy, so a list default is never shared) when
    the block does not set it."""
    return training[key] if key in training else copy.deepcopy(TRAINING_DEFAULTS[key])


def batch_problem(training: dict) -> str | None:
    """Why the training settings ``training`` cannot split their global batch (None when they can): each optimiser
    step accumulates whole micro batches on every data-parallel process, so micro_batch_size x processes must
    divide batch_size. The one owner of the rule: ``TrainSettings`` and the config check ask it."""
    batch, micro, processes = (training_value(training, key) for key in ("batch_size", "micro_batch_size", "processes"))
    if batch % (micro * processes):
        return f"micro_batch_size x processes ({micro} x {processes}) must divide training.batch_size ({batch})"
    return None


def merges_lora(role: str) -> bool:
    """Whether a LoRA run of ``role`` merges its adapter into its base when training ends: a teacher does (its
    students and the teacher-state cache read the merged weights, many times); a student keeps the adapter alone as
    its model, which its readers (its evaluation, Figure 3) merge on loading (``repro.models.load_model``)."""
    return role == "teacher"


def role_training(config: dict, pair: str, role: str) -> dict:
    """The training settings of a pair's ``role`` ("teacher" or "student"): the global ``training`` block with the
    pair's ``{role}_training`` overrides (the one place they are merged; ``repro.grid.cell_training`` adds a run's
    seed)."""
    return {**config["training"], **config["pairs"][pair][f"{role}_training"]}


@dataclass(frozen=True)
class PretrainSettings:
    """The pretraining of every built base model (``repro.pretrain``; the config's ``pretraining`` section)."""
    epochs: int = 2
    lr: float = 2e-3
    batch_size: int = 16
    max_length: int = 256
    min_lr: float = 1e-7
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_section(asdict(self), "pretraining", "pretraining settings")  # the schema owns the bounds


@dataclass(frozen=True)
class ToySettings:
    """Sizes of the toy simulation of Figure 1 (``repro.toy``); the defaults are the paper's (PAPER.md section 2)."""
    n_vectors: int = 100
    n_classes: int = 10_000
    dim: int = 2
    steps: int = 1000
    lr: float = 1.0
    repetitions: int = 100
    chunk: int = 10          # repetitions per batch (peak memory about 300 bytes x chunk x n_vectors x n_classes)
    seed: int = 10
    teacher_scale: float = 2.0
    student_shift: float = 3.0
    threads: int = 1

    def __post_init__(self):
        # The schema's ``figures.toy`` entry owns the bounds of the keys a config may set; the others are checked here.
        values = asdict(self)
        config_keys = section_keys("figures.toy")
        check_section({k: v for k, v in values.items() if k in config_keys}, "figures.toy", "toy settings")
        for key in ("dim", "threads"):
            if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] < 1:
                raise ValueError(f"toy settings: {key} must be a positive integer, got {values[key]!r}")


@dataclass(frozen=True)
class JudgeSettings:
    """Who judges the pairs of Figure 2 (``repro.judge``), how, and on which prompts; the defaults are the paper's
    setting."""

    model: str = "gpt-4-turbo"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.1
    n_prompts: int = 100
    test_set: str = "dolly"
    generation_seed: int = 10
    sample_seed: int = 1
    concurrency: int = 4
    max_retries: int = 6
    timeout_s: float = 120.0
    max_tokens: int = 1024
    both_orders: bool = False
    prompt: str = "reasoned"

    def __post_init__(self):
        # The schema's ``figures.judge`` entry is the one owner of these bounds (a config file and Python alike).
        check_section(asdict(self), "figures.judge", "judge settings")


# The figures' settings where the config leaves a key out: the paper's, as the settings classes of Figures 1 and 2
# define them (``threads`` is the job's), and Figure 3's (``repro.grid.figure_settings`` merges the config's over them).
FIGURE_DEFAULTS = {
    "toy": {f.name: f.default for f in fields(ToySettings) if f.name != "threads"},
    "representation": {"divergence": "kl", "n_examples": 1000, "max_chars": 256},
    "judge": {f.name: f.default for f in fields(JudgeSettings)},
}
