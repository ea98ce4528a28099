# The notebook rendering of every workflow mode (the grid and the study): jupytext source -> .ipynb -> papermill ->
# rendered .ipynb and standalone .html, each written atomically (repro.render). Needs RESULTS (the folder of the run)
# defined first.
import sys

from repro import gpus, render, slurm

# Tools run with this interpreter (the project's environment), whatever PATH holds.
PYTHON = sys.executable


wildcard_constraints:
    notebook=r"[a-z0-9_]+",


def source_notebook(name):
    """The runnable .ipynb of notebooks/<name>.py (made by rule convert_notebook)."""
    return f"{RESULTS}/.notebooks/{name}.ipynb"


def gpu_request(count):
    """The `gpu` resource of jobs that can use `count` GPUs: `count`, or 0 where the job runs without GPUs (a SLURM
    partition without them, or an allocation that holds none: repro.slurm.job_gpus), so that a CPU partition is
    never asked for --gpus."""
    return lambda wildcards, rulename: slurm.job_gpus(workflow, rulename, count)


def job_gpus(count, job):
    """For the `with` block of GPU job `job` (a name for messages): `count` GPUs of this machine that no other job
    holds meanwhile (its `gpu` resource), as the environment for the job's subprocess, CUDA_VISIBLE_DEVICES set to
    them; None on a machine without GPUs (the subprocess inherits the environment untouched). Never changes
    os.environ: jobs run as threads of Snakemake's process (repro.gpus)."""
    return gpus.job_devices(RESULTS, count, job=job)


def render_notebook(notebook, params, output, log, gpu=0):
    """Render notebook `notebook` with `params` into `output` and its HTML copy (repro.render.render); `gpu`: the
    GPUs the job holds (its `gpu` resource), its kernel's alone while it runs (job_gpus)."""
    with job_gpus(gpu, str(output)) as env:
        render.render(source_notebook(notebook), params, output, log, name=notebook, python=PYTHON, env=env)
