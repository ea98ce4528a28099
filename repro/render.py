"""Rendering a workflow notebook: jupytext source -> runnable .ipynb -> papermill run -> rendered .ipynb and HTML.

Every notebook job of the workflow (the cells, the tables, the figures, the study) goes through ``render``; the
rules call it in one line (``rules/render.smk``). Each output is written atomically: the notebook runs under a
temporary name (``<output stem>.failed.ipynb``) and is renamed only when it has run through, so a failed run leaves
that file to inspect and never a complete-looking notebook. Papermill runs as its own process (``python -m
papermill``, the project's interpreter) with progress bars off and tqdm's ipywidgets warning silenced, so a rendered
notebook shows no stderr noise; its messages go to the job's log. A kernel that dies before it answers (before any
cell ran: two kernels starting at once can collide on a port) is started once more; the first attempt's messages
stay in ``<log>.kernel-start``. A notebook that fails stops the job with its exception in one line.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from .io import atomic_path, failure_cause, write_text

KERNEL_DIED = "Kernel died before replying to kernel_info"


class NotebookFailed(RuntimeError):
    """A notebook that did not run through: the failing cell's exception in one line, the log and the partial
    notebook named."""


def show_messages() -> None:
    """Called at the top of every workflow notebook: the project's log messages (a run's training warnings, the
    tables' teacher and training warnings) print as plain output lines, where a reader of the rendered notebook
    sees them, instead of stderr (without a handler, Python's last resort writes there)."""
    logger = logging.getLogger("repro")
    if not any(getattr(h, "repro_notebook", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handler.repro_notebook = True
        logger.addHandler(handler)
        logger.propagate = False


def convert(source: str | os.PathLike, target: str | os.PathLike, log: str | os.PathLike) -> None:
    """Write the jupytext source ``source`` as the .ipynb ``target`` (atomically); note it in ``log``."""
    import jupytext

    with atomic_path(target) as tmp:
        jupytext.write(jupytext.read(str(source)), tmp, fmt="ipynb")
    write_text(log, f"converted {source} -> {target}\n")


def params_file(output: str | os.PathLike) -> Path:
    """Where the parameters of rendered notebook ``output`` are written (beside it)."""
    out = Path(output)
    return out.with_name(f"{out.stem}.params.yaml")


def papermill_command(notebook: str | os.PathLike, running: str | os.PathLike, params: str | os.PathLike,
                      python: str = sys.executable) -> list[str]:
    """The papermill run of ``notebook`` into ``running`` with the parameters file ``params``."""
    return [python, "-m", "papermill", "--no-progress-bar", "--log-level", "WARNING", "-k", "python3", str(notebook),
            str(running), "-f", str(params)]


def _run(command: list[str], log: Path, env: Mapping[str, str] | None) -> bool:
    # no progress bars, and not tqdm's warning that a kernel without ipywidgets cannot draw them
    env = {**(os.environ if env is None else env), "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore:IProgress not found"}
    with open(log, "w", encoding="utf-8") as f:
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env).returncode == 0


def render(notebook: str | os.PathLike, params: dict, output: str | os.PathLike, log: str | os.PathLike,
           name: str | None = None, python: str = sys.executable, env: Mapping[str, str] | None = None) -> None:
    """Run the .ipynb ``notebook`` with ``params`` into ``output`` (and its HTML copy, ``output`` with suffix
    .html); papermill's messages go to ``log``. ``name``: the notebook's name in an error (default: its stem).
    ``env``: the environment of the papermill process, which its kernel and the kernel's subprocesses inherit
    (default: this process's; a GPU job's names its devices, ``repro.gpus.job_devices``). Raises
    ``NotebookFailed`` when it does not run through."""
    out, log = Path(output), Path(log)
    name = name or Path(notebook).stem
    parameters = params_file(out)
    write_text(parameters, yaml.safe_dump(params, sort_keys=False))
    running = out.with_name(f"{out.stem}.failed.ipynb")
    command = papermill_command(notebook, running, parameters, python)
    if not _run(command, log, env):
        text = log.read_text(encoding="utf-8", errors="replace")
        if KERNEL_DIED not in text:
            raise _failure(name, text, log, running)
        write_text(Path(f"{log}.kernel-start"), text)
        if not _run(command, log, env):
            raise _failure(name, log.read_text(encoding="utf-8", errors="replace"), log, running)
    running.replace(out)
    export_html(out, out.with_suffix(".html"))


def _failure(name: str, text: str, log: Path, running: Path) -> NotebookFailed:
    cause = failure_cause(text) or "no exception in the log (the kernel may have been killed)"
    return NotebookFailed(f"notebook {name} failed: {cause}\n  traceback: {log}\n  the notebook as far as it ran: "
                          f"{running}")


def export_html(notebook: str | os.PathLike, target: str | os.PathLike) -> None:
    """Write a rendered notebook as standalone HTML (plots embedded), atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    write_text(target, body)
