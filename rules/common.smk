# Helpers shared by the rules of the grid (no rules here): the table cells and their runs, what each job is given.
import functools
import json
import os
import subprocess
from pathlib import Path

from repro import analysis, claims, estimate, gpus, grid, layout, slurm
from repro.io import write_text
from repro.report import notebooks as report_notebooks, write_report  # `report` is Snakemake's own
from repro.settings import training_value

CELLS = grid.cells(config)
RUNS = grid.runs(config)  # one job per run: a cell trained with one training seed
RESULTS = str(grid.results_dir(config))
RUN = layout.run_pattern(RESULTS)  # the folder of run {pair}/{cell}/seed{seed}
DATA_FILES = [str(p) for p in grid.data_files(config)]
TABLES = [str(p) for p in grid.table_files(config)]
TOKENIZER_FILES = [str(grid.tokenizer_dir(config, name) / "tokenizer.json") for name in config["tokenizers"]]
BASE_MODEL_FILES = [str(grid.base_model_dir(config, name) / "config.json") for name in grid.built_models(config)]
PRETRAINING = grid.pretraining(config)
BUILT_MODEL_NAMES = "|".join(sorted(grid.built_models(config))) or "^$"
CELL_NAMES = "|".join(sorted({c.name for c in CELLS}))
SEPARATE_EVALUATION = grid.separate_evaluation(config)
PAIR_NAMES = "|".join(sorted(config["pairs"]))


wildcard_constraints:
    pair=PAIR_NAMES,
    cell=CELL_NAMES,
    seed=r"\d+",


def cell_of(wildcards):
    """The run {pair}/{cell}/seed{seed} of the job."""
    return grid.find_run(config, wildcards.pair, wildcards.cell, int(wildcards.seed))


def cell_params(wildcards, threads, evaluate):
    """The notebook parameters of run {pair}/{cell}/seed{seed}; `evaluate`: also evaluate in the training
    notebook."""
    return {**grid.cell_params(config, cell_of(wildcards), threads), "evaluate": evaluate}


def cell_processes(wildcards):
    """The data-parallel processes of a training job (training.processes of its run)."""
    return training_value(grid.cell_training(config, cell_of(wildcards)), "processes")


def cell_gpus(wildcards, rulename):
    """GPUs a training job holds: one per data-parallel process, declared so that `--resources gpu=N` never
    oversubscribes a machine's GPUs (a CPU run sets no limit); none where the job runs without GPUs (a CPU
    partition of a SLURM cluster: render.smk's gpu_request)."""
    return slurm.job_gpus(workflow, rulename, cell_processes(wildcards))


def cell_cpus(wildcards, threads):
    """CPUs a training job asks of a cluster (sbatch --cpus-per-task): its threads for each of its processes, which
    run side by side in the one allocation."""
    return threads * cell_processes(wildcards)


@functools.cache
def machine_has_gpus():
    """Whether this machine has GPUs (repro.gpus.machine_gpus, asked once per workflow); no when nvidia-smi hangs."""
    try:
        return bool(gpus.machine_gpus())
    except gpus.GPUClaimError:
        return False


def runs_on_gpus(rulename, count):
    """Whether a job of `rulename` that can use `count` GPUs computes on GPUs: it asks for some (slurm.job_gpus)
    and, on a local run, this machine has some."""
    if slurm.job_gpus(workflow, rulename, count) == 0:
        return False
    return True if slurm.submitting(workflow) or os.environ.get("SLURM_JOB_ID") else machine_has_gpus()


def cell_mem_mb(wildcards, rulename, steps):
    """Host memory (MB) to request for a cell's job doing `steps` ("train", "evaluate"; a run_cell job both): the
    largest of repro.estimate.job_host_mb's, for a GPU node or a CPU one as the job runs (runs_on_gpus)."""
    cell = cell_of(wildcards)
    gpu = runs_on_gpus(rulename, cell_processes(wildcards))
    return max(estimate.job_host_mb(config, cell, step, gpu) for step in steps)


def cache_mem_mb(wildcards, rulename):
    """Host memory (MB) to request for a pair's teacher-state cache job (repro.estimate.cache_host_mb)."""
    return estimate.cache_host_mb(config, wildcards.pair, runs_on_gpus(rulename, 1))


def cell_runtime(wildcards, step):
    """Minutes to request for a job on a cluster: the paper-scale estimate of `python -m repro.estimate`, with
    margin (ignored by local runs)."""
    return estimate.job_minutes(config, cell_of(wildcards), step)


def cache_runtime(pair):
    """Minutes to request for a pair's teacher-state cache job (the estimate, with margin)."""
    return estimate.cache_minutes(config, pair)


def cell_inputs(wildcards):
    """Inputs of one cell job: its notebook, the data, the base model it trains (when built here), and the trained
    teacher it distils from."""
    cell = cell_of(wildcards)
    inputs = {"notebook": source_notebook("train"), "data": DATA_FILES}
    model = config["pairs"][cell.pair][cell.role]
    if model in grid.built_models(config):
        inputs["model"] = str(grid.start_model_dir(config, model) / "config.json")
    if cell.needs_teacher:
        inputs["teacher"] = str(grid.train_summary_file(config, grid.teacher_run(config, cell)))
    if grid.uses_teacher_states(config, cell):
        inputs["teacher_states"] = str(grid.teacher_states_file(config, cell.pair))
    return inputs


def pretrain_model(name, corpus, threads, log):
    """Pretrain base model `name` with `python -m repro.pretrain` (settings from the `pretraining` section); its
    output goes to `log`."""
    keys = ("epochs", "lr", "batch_size", "max_length", "min_lr", "weight_decay", "clip", "seed")
    settings = {k: PRETRAINING[k] for k in keys if k in PRETRAINING}
    command = [PYTHON, "-m", "repro.pretrain", "--model", str(grid.base_model_dir(config, name)), "--corpus", corpus,
               "--out", str(grid.pretrained_model_dir(config, name)), "--settings", json.dumps(settings),
               "--threads", str(threads)]
    with open(log, "w", encoding="utf-8") as f:
        subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True)


TEACHER_STATE_PAIRS = grid.teacher_state_pairs(config)


def build_teacher_states(pair, train_file, out_file, threads, log, gpu):
    """Build the pair's teacher-state cache with `python -m repro.teacher_states`, given the training settings the
    pair's cells use (in one process: the builder runs alone), on the job's `gpu` GPUs (job_gpus); its output goes
    to `log`."""
    entry = TEACHER_STATE_PAIRS[pair]
    training = {**entry["training"], "processes": 1, "shard_optimizer": False}
    teacher = grid.checkpoint_dir(config, grid.teacher_run(config, grid.Cell(pair, "sft", role="teacher")))
    command = [PYTHON, "-m", "repro.teacher_states", "--teacher", str(teacher), "--data", str(train_file),
               "--out", str(out_file), "--training", json.dumps(training, sort_keys=True), "--threads", str(threads)]
    with job_gpus(gpu, f"cache_teacher {pair}") as env, open(log, "w", encoding="utf-8") as f:
        subprocess.run(command + (["--cma"] if entry["cma"] else []), stdout=f, stderr=subprocess.STDOUT, check=True,
                       env=env)


FIGURE_NUMBERS = grid.figure_numbers(config)
FIGURE_FILES = {n: [str(p) for p in grid.figure_files(config, n)] for n in FIGURE_NUMBERS}
FIGURE3_INPUTS = sorted({str(grid.train_summary_file(config, run)) for cells in
                         grid.representation_students(config).values() for cell in cells.values()
                         for run in grid.cell_runs(config, cell) + [grid.teacher_run(config, cell)]})
REPORT = str(grid.report_file(config))
CLAIMS_FILES = list(claims.claims_files(config).values())
CLAIMS_FIGURE_INPUTS = [str(analysis.figure1_outputs(config)["results"])] + (
    [str(analysis.figure3_outputs(config)["results"])] if 3 in FIGURE_NUMBERS else [])
JUDGE_CONFIGURED = bool(os.environ.get(grid.figure_settings(config, "judge")["api_key_env"], "").strip())


def report_inputs(wildcards):
    """Everything the report links: tables, figures (Figure 2's status file: its figure exists only with a
    judge), training curves and every rendered notebook."""
    inputs = list(TABLES) + [str(p) for p in CLAIMS_FILES]
    inputs += [p for n in FIGURE_NUMBERS if n != 2 for p in FIGURE_FILES[n]]
    if 2 in FIGURE_NUMBERS:
        inputs.append(str(analysis.figure2_outputs(config)["results"]))
    inputs += [str(p) for p in analysis.training_curve_files(config)]
    inputs += [str(p) for p in grid.claims_plot_files(config)]
    inputs += [str(path) for _, path in report_notebooks(config)]
    return inputs
