"""Where a job computes and in which precision, in one place below the training loop and the teacher-state cache:
the device (a GPU when there is one), accelerate's ``Accelerator`` with the run's autocast, and the dtype in which
frozen weights (teachers, LoRA bases) are held (``repro.settings.TrainSettings.frozen_dtype``)."""
from __future__ import annotations

import torch
from accelerate import Accelerator

from .settings import TrainSettings


def on_gpu() -> bool:
    """Whether this process computes on a GPU."""
    return torch.cuda.is_available()


def device_name() -> str:
    return "cuda" if on_gpu() else "cpu"


def make_accelerator(settings: TrainSettings) -> Accelerator:
    """The ``accelerate.Accelerator`` of a training or cache job: device and process group (set up from the
    environment that ``accelerate launch`` or ``torchrun`` gives; one process otherwise) and bf16 autocast where the
    run's precision asks for it."""
    gpu = on_gpu()
    accelerator = Accelerator(mixed_precision=settings.mixed_precision(gpu), cpu=not gpu)
    if accelerator.num_processes != settings.processes:
        raise ValueError(f"training.processes is {settings.processes} but this job runs as "
                         f"{accelerator.num_processes} processes; launch it with --num_processes {settings.processes}")
    return accelerator
