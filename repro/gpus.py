"""Distinct GPUs for the concurrent jobs of one machine: a device pool of file locks.

``snakemake --resources gpu=N`` only counts GPUs: it never starts jobs that together declare more than N, but it
does not say which devices a job gets, and every CUDA process that is not told otherwise takes GPU 0. So each GPU
job claims ``k`` distinct ids (its ``gpu`` resource) from the pool of the machine's GPUs before it starts its
subprocess (papermill, ``python -m repro.teacher_states``), and hands that subprocess ``CUDA_VISIBLE_DEVICES`` set
to them; the process's own environment is never changed (the default profile runs jobs as threads of Snakemake's
process, which share it).

A claim is an exclusive ``fcntl.flock`` on one file per id, ``<results>/.gpus/<host>/<id>.lock``. flock locks
belong to an open file, so two threads of one process that each open the file exclude each other just as two
processes do, and the kernel drops the lock when the file's last descriptor closes: when the job ends or fails
(the ``finally`` of ``claim``) and when its process dies, ``kill -9`` included. Nothing ever needs cleaning up; a
lock file that exists is not a claim. The descriptors are not inherited by the job's subprocesses (Python opens
them close-on-exec), so a claim ends with the job that made it. The folder is per host (and per SLURM job, which
owns its devices), because a results folder on a cluster's shared file system is seen by every node, and NFS
passes flock locks between them.

Torch-free: the rules import it while the job graph is built.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

POOL = ".gpus"
CLAIM_TIMEOUT = 300.0  # seconds a job waits for free devices before it fails
NVIDIA_SMI = ("nvidia-smi", "-L")
NVIDIA_SMI_TIMEOUT = 20.0
VISIBLE = "CUDA_VISIBLE_DEVICES"

_GPU_LINE = re.compile(r"^GPU (\d+):")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)\s]+)\)")


class GPUClaimError(RuntimeError):
    """A job could not get the devices it needs: more than the machine has, or none free before the timeout."""


def visible_ids(value: str) -> list[str]:
    """The device ids a ``CUDA_VISIBLE_DEVICES`` value names, in order: indices, ``GPU-``/``MIG-`` UUIDs. As CUDA
    reads it, a negative index ends the list (``-1`` and the empty string hide every device), and so does SLURM's
    ``NoDevFiles`` (a job given no GPU)."""
    ids: list[str] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or entry == "NoDevFiles" or re.fullmatch(r"-\d+", entry):
            break
        if entry not in ids:
            ids.append(entry)
    return ids


def listed_ids(text: str) -> list[str]:
    """The device ids in the output of ``nvidia-smi -L``: each GPU's index, or, for a GPU split into MIG instances,
    the UUIDs of its instances (the ids CUDA accepts for them)."""
    gpus: list[tuple[str, list[str]]] = []  # (index, its MIG instances)
    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            gpus.append((m.group(1), []))
        elif gpus and (m := _MIG_LINE.match(line)):
            gpus[-1][1].append(m.group(1))
    return [device for index, migs in gpus for device in (migs or [index])]


def machine_gpus(environ: Mapping[str, str] | None = None, command: tuple[str, ...] = NVIDIA_SMI,
                 timeout: float = NVIDIA_SMI_TIMEOUT) -> list[str]:
    """The GPU ids of this machine: ``CUDA_VISIBLE_DEVICES`` when it is set (as SLURM sets it for a job), else those
    ``nvidia-smi -L`` lists, else none (no ``nvidia-smi``, or one that finds no working driver: a CPU machine).
    Raises ``GPUClaimError`` when ``nvidia-smi`` does not answer within ``timeout`` seconds."""
    environ = os.environ if environ is None else environ
    if VISIBLE in environ:
        return visible_ids(environ[VISIBLE])
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return []
    except subprocess.TimeoutExpired:
        raise GPUClaimError(f"`{' '.join(command)}` did not answer within {timeout:g} s; set {VISIBLE} to this "
                            "machine's GPU ids (e.g. 0,1,2,3) to tell the workflow which devices it may use") from None
    return listed_ids(result.stdout) if result.returncode == 0 else []


def pool_dir(results: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Path:
    """The folder of the lock files of this machine's devices in run folder ``results``: one per host, and one per
    SLURM job (a SLURM job owns its devices; two on one node may both see theirs as device 0)."""
    environ = os.environ if environ is None else environ
    scope = socket.gethostname() or "localhost"
    if environ.get("SLURM_JOB_ID"):
        scope += f"-slurm{environ['SLURM_JOB_ID']}"
    return Path(results) / POOL / _file_name(scope)


def _file_name(text: str) -> str:
    # MIG UUIDs hold slashes; a lock file's name must be one path component
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


class DevicePool:
    """The devices ``ids`` of one machine, claimed through the lock files in ``folder``."""

    def __init__(self, folder: str | os.PathLike, ids: list[str], poll: float = 0.2):
        self.folder = Path(folder)
        self.ids = list(ids)
        self.poll = poll

    def lock_file(self, device: str) -> Path:
        return self.folder / f"{_file_name(device)}.lock"

    @contextmanager
    def claim(self, count: int, timeout: float = CLAIM_TIMEOUT, job: str = "") -> Iterator[list[str]]:
        """Hold ``count`` distinct devices of the pool for the ``with`` block and yield their ids (``[]`` when the
        pool is empty or ``count`` is 0). Waits until that many are free at once: a job takes all of them or none,
        so two jobs that each hold part of what the other needs never wait on each other. ``job`` names the claim
        in the lock files, for the message of a job that waits too long. Raises ``GPUClaimError`` when ``count``
        exceeds the pool, or when ``timeout`` seconds pass without ``count`` free devices."""
        if count <= 0 or not self.ids:
            yield []
            return
        if count > len(self.ids):
            raise GPUClaimError(f"{job or 'a job'} needs {count} GPUs and this machine has {len(self.ids)} "
                                f"({','.join(self.ids)}): lower its `gpu` resource (training.processes of a "
                                "training job)")
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        held: dict[str, int] = {}
        try:
            while not (held := self._take(count, job)):
                if time.monotonic() >= deadline:
                    raise GPUClaimError(self._busy_message(count, timeout, job))
                time.sleep(self.poll)
            yield list(held)
        finally:
            for fd in held.values():
                os.close(fd)  # the file's only descriptor: the kernel drops its lock

    def _take(self, count: int, job: str) -> dict[str, int]:
        """Lock ``count`` free devices, lowest ids first, and return their open files; ``{}``, holding nothing,
        when fewer are free."""
        held: dict[str, int] = {}
        try:
            for device in self.ids:
                fd = os.open(self.lock_file(device), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                held[device] = fd
                # who holds it, for the message of a job that waits; the lock, not this text, is the claim
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} {job}".strip().encode() + b"\n", 0)
                if len(held) == count:
                    return held
        except BaseException:
            for fd in held.values():
                os.close(fd)
            raise
        for fd in held.values():
            os.close(fd)
        return {}

    def _busy_message(self, count: int, timeout: float, job: str) -> str:
        holders = []
        for device in self.ids:
            fd = os.open(self.lock_file(device), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                holder = "free"
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "held"
            finally:
                os.close(fd)
            holders.append(f"{device} {holder}")
        return (f"{job or 'a job'} waited {timeout:g} s for {count} free GPUs of {len(self.ids)} "
                f"({', '.join(holders)}): Snakemake's gpu resource should prevent this; run it with --resources "
                f"gpu={len(self.ids)} so that it never starts more GPU jobs at once than the machine has, and let no "
                f"other run use the devices of {self.folder}")


def job_env(ids: list[str], environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment of a job's subprocess that may use exactly the devices ``ids``: a copy of ``environ``
    (default: this process's) with ``CUDA_VISIBLE_DEVICES`` set to them; None (the subprocess inherits the
    environment untouched) when ``ids`` is empty."""
    if not ids:
        return None
    return {**(os.environ if environ is None else environ), VISIBLE: ",".join(ids)}


@contextmanager
def job_devices(results: str | os.PathLike, count: int, job: str = "", timeout: float = CLAIM_TIMEOUT,
                environ: Mapping[str, str] | None = None) -> Iterator[dict[str, str] | None]:
    """Claim ``count`` distinct GPUs of this machine for a job of run folder ``results`` for the ``with`` block,
    and yield the environment for the job's subprocess (``job_env``); None on a machine without GPUs or for
    ``count`` 0, so a CPU run's subprocesses inherit the environment as it is. ``environ``: the environment to
    read the devices from and to copy (default: this process's; it is never modified)."""
    environ = os.environ if environ is None else environ
    ids = machine_gpus(environ) if count > 0 else []
    with DevicePool(pool_dir(results, environ), ids).claim(count, timeout, job) as claimed:
        yield job_env(claimed, environ)
