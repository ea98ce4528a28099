# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tables 1-3: Rouge-L of every method on the five test sets
#
# Aggregates the scores of every finished training run (PAPER.md section 5): one row per method, the columns Dolly,
# SelfInst, VicunaEval, S-NI, UnNI and their average, mean ± std over the row's training runs (each run's score the
# mean over the evaluation seeds), the paper's number where PAPER.md gives one, and for every DSKD row (every Table 3
# row) the difference from the KD row of the same divergence with a 95% interval from a hierarchical bootstrap over
# training runs, then prompts. Under each table: the standard error of one run's Avg from its prompts and sampling
# seeds alone. Table 1: GPT-2 students; Table 2: TinyLLaMA students; Table 3: the ablation (KD in different spaces,
# in the student space only, in both spaces). Written as Markdown, LaTeX and CSV.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml

# %%
from IPython.display import Markdown, display

from repro import tables
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
for path in tables.write_tables(config):
    if path.suffix == ".md":
        display(Markdown(path.read_text()))
