# DSKD reproduction workflow: configuration -> data -> table cells -> tables.
# Run through the README's command (make repro) or `snakemake -c2`; a different config with
# `--configfile FILE --replace-workflow-config`. Machine settings live in profiles/.
from pathlib import Path

from repro.config import validate_config

configfile: Path(workflow.basedir) / "config" / "config.yaml"

# Stop before any job runs if the config is wrong; the message names every bad key.
validate_config(config)

include: "rules/common.smk"
include: "rules/notebooks.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/report.smk"


rule all:
    input:
        TABLES,
    default_target: True
