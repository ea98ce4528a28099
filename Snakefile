# DSKD reproduction workflow: configuration -> data -> table cells -> tables, figures -> report.
# Run through the README's command (make repro) or `snakemake -c2`; a different config with `--configfile FILE`
# (used instead of config/config.yaml, never merged into it). Machine settings live in profiles/.
from pathlib import Path

from repro.config import ConfigError, load_yaml, results_dir_problem, validate_config

# The default configuration, unless the command line names one. (Not merged with it: the jobs that Snakemake spawns
# are not told about --replace-workflow-config, and would otherwise run with a merge of both files.)
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"

# Snakemake has read the config file(s) already; read them again strictly, so that a key given twice (which YAML
# silently resolves to the last) stops the run naming the file and line.
for _path in workflow.overwrite_configfiles or [Path(workflow.basedir) / "config" / "config.yaml"]:
    load_yaml(_path)


# A study config (config/study.yaml: one `study` section) runs the study of when DSKD helps, every condition a
# workflow of its own; any other config is the grid of Tables 1-3. Either stops before any job runs if the config is
# wrong, with a message that names every bad key.
if "study" in config:
    from repro.study import validate_study

    validate_study(config)
    RESULTS = config["study"]["results_dir"]

    include: "rules/render.smk"
    include: "rules/notebooks.smk"
    include: "rules/study.smk"

    rule all:
        input:
            STUDY_OUTPUTS,
        default_target: True

else:
    validate_config(config)
    if (_problem := results_dir_problem(config)) is not None:
        raise ConfigError(_problem)

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
