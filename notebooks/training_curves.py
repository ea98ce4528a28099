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
# # Training curves of every table cell
#
# For each table row, from the `train_log.jsonl` of each of its training runs (one line style per training seed):
# the total loss and each logged loss term per optimiser step, the diagnostics (the DSKD projectors' accuracy
# `t2s_acc`, the gradient norm) and the dev Rouge-L after every epoch that chose the checkpoint (PAPER.md section
# 3). One PNG per row, `results/figures/training/<pair>/<row>.png`; the first few are shown here.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml
shown: int = 4  # how many of the figures to show in this notebook

# %%
from IPython.display import Image, display

from repro.analysis import make_training_curves
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
files = make_training_curves(config)
print(f"{len(files)} files written")
for path in [p for p in files if p.suffix == ".png"][:shown]:
    display(Image(filename=str(path)))
