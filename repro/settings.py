"""A run's training settings (the config's ``training`` block, merged per pair and role by
``repro.config.role_training``) and their defaults: ``TrainSettings`` is the one place where a training key's default
is written; torch-free code reads it through ``training_value``.
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields

from .names import CHOICES


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
    processes: int = 1  # data-parallel processes of the job (GPUs); the global batch is split among them
    shard_optimizer: bool = False  # ZeRO stage 1 with several processes: AdamW state split across processes

    def __post_init__(self):
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if self.on_divergence not in ("warn", "stop"):
            raise ValueError(f"training.on_divergence must be 'warn' or 'stop', got {self.on_divergence!r}")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size % (self.micro_batch_size * self.processes):
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of micro_batch_size x processes = "
                             f"{self.micro_batch_size} x {self.processes}")
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
