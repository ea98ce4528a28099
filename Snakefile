# DSKD reproduction workflow: configuration -> data -> table cells -> tables, figures -> report.
# Run through the README's command (make repro) or `snakemake -c2`; a different config with `--configfile FILE`
# (used instead of config/config.yaml, never merged into it). Machine settings live in profiles/.
from pathlib import Path

from repro.config import validate_config

# The default configuration, unless the command line names one. (Not merged with it: the jobs that Snakemake spawns
# are not told about --replace-workflow-config, and would otherwise run with a merge of both files.)
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"


# Stop before any job runs if the config is wrong; the message names every bad key.
validate_config(config)

include: "rules/common.smk"
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
