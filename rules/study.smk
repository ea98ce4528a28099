# The study of when DSKD helps (repro.study): every condition of config/study.yaml trains its SFT, KD and DSKD runs
# in a workflow of its own (one condition at a time, with all the cores), then the study notebook compares them.
from pathlib import Path

from repro import study

STUDY = config["study"]  # (RESULTS, the study's results folder, is set by the Snakefile)
CONDITIONS = list(STUDY["conditions"])
COMPARISON_FILES = [str(study.comparisons_file(config, name)) for name in CONDITIONS]
STUDY_FILES = study.study_files(config)
STUDY_OUTPUTS = [str(STUDY_FILES["table"]), str(STUDY_FILES["plot"]), f"{RESULTS}/study.html"]


rule study_condition:
    """Train every run of one study condition (its own workflow under <results_dir>/<condition>/results) and write
    its comparisons with intervals over training runs."""
    output:
        f"{RESULTS}/{{condition}}/comparisons.json",
    wildcard_constraints:
        condition="|".join(CONDITIONS),
    log:
        f"{RESULTS}/logs/study_condition/{{condition}}.log",
    threads: workflow.cores
    run:
        study.run_condition(config, wildcards.condition, threads, log[0], output[0], PYTHON)


rule study:
    """The study's table and plot: DSKD - KD, KD - SFT, DSKD - SFT and teacher - SFT in every condition."""
    input:
        notebook=source_notebook("study"),
        comparisons=COMPARISON_FILES,
    output:
        table=str(STUDY_FILES["table"]),
        plot=str(STUDY_FILES["plot"]),
        notebook=f"{RESULTS}/study.ipynb",
        html=f"{RESULTS}/study.html",
    log:
        f"{RESULTS}/logs/study.log",
    run:
        render_notebook("study", {"study_config": config}, output.notebook, log[0])
