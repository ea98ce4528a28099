# DSKD reproduction workflow: configuration -> data -> table cells -> tables, figures -> report.
# Run through the README's command (make repro) or `snakemake -c2`; a different config with `--configfile FILE`
# (used instead of config/config.yaml, never merged into it). Machine settings live in profiles/.
import sys
import time
from pathlib import Path

from repro import slurm
from repro.config import check_workflow_config, run_check
from repro.estimate import memory_problems
from repro.memory import mmap_threshold_setting
from repro.schema import ConfigError

# Jobs run this checkout's code: the notebook kernels and `python -m repro.*` that jobs start import `repro` from
# beside this Snakefile, not from wherever the environment's editable install points (a second clone, a cluster job).
slurm.import_path_first(workflow.basedir)

# The default configuration, unless the command line names one. (Not merged with it: the jobs that Snakemake spawns
# are not told about --replace-workflow-config, and would otherwise run with a merge of both files.)
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"

# A wrong config stops here, before any job is planned: the message names the file and every bad key (a key given
# twice included, which Snakemake's own reading would resolve to the last), and nothing else is printed.
try:
    check_workflow_config(config, workflow.overwrite_configfiles or [Path(workflow.basedir) / "config" / "config.yaml"])
except ConfigError as _error:
    sys.exit(f"Configuration error, nothing was run:\n{_error}")


# A study config (config/study.yaml: one `study` section) runs the study of when DSKD helps, every condition a
# workflow of its own; any other config is the grid of Tables 1-3.
if "study" in config:
    RESULTS = config["study"]["results_dir"]

    include: "rules/render.smk"
    include: "rules/notebooks.smk"
    include: "rules/study.smk"

    rule all:
        input:
            STUDY_OUTPUTS,
        default_target: True

else:
    SLURM_RUN = {}  # when this run began submitting to SLURM (onstart), for onerror

    # Before the first job of a real run (Snakemake skips this in a dry run, which must plan the paper grid
    # offline): what the first jobs would need, a model id that can be loaded and processed data without a fault
    # (every file and row checked; what is suspicious printed here once and recorded in data/sources.json); where
    # the run declares its GPUs' memory (gpu_memory_gb), every job predicted not to fit (repro.estimate); a bad
    # REPRO_MMAP_THRESHOLD in the environment.
    onstart:
        _problems, _warnings = run_check(config)
        _problems += memory_problems(config)
        try:  # the allocator setting every job applies (repro.memory.fix_mmap_threshold)
            mmap_threshold_setting()
        except ValueError as _error:
            _problems.append(str(_error))
        if _warnings:
            print("Data warnings:\n  " + "\n  ".join(_warnings), file=sys.stderr)
        # Submitting to SLURM (profiles/slurm): the cluster can run what is asked, and no job waits forever
        # (repro.slurm).
        if slurm.submitting(workflow):
            _problems += slurm.preflight(workflow)
        if _problems:
            sys.exit("Nothing was run:\n  " + "\n  ".join(_problems))
        if slurm.submitting(workflow):
            SLURM_RUN["started"] = time.time()
            slurm.read_cancelled_jobs(workflow)
            slurm.PendingWatch(workflow.workdir_init).start()

    # A job that failed on the cluster: its own error (or SLURM's cancellation) and its log, one line each.
    onerror:
        if slurm.submitting(workflow) and "started" in SLURM_RUN:
            for _line in slurm.job_causes(slurm.log_dir(workflow), SLURM_RUN["started"]):
                print(_line, file=sys.stderr)

    include: "rules/common.smk"
    include: "rules/render.smk"
    include: "rules/notebooks.smk"
    include: "rules/data.smk"
    include: "rules/train.smk"
    include: "rules/analysis.smk"
    include: "rules/report.smk"

    rule all:
        input:
            TABLES,
            REPORT,
        default_target: True
