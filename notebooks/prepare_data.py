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
# # Data, miniature tokenizers and base models
#
# The offline stand-in for the paper's data and pretrained models (PAPER.md sections 3-4): the synthetic
# instruction data (training set, dev set and the five test-set roles), the miniature tokenizers of the paper's
# kinds trained on the training set, and the randomly initialised base models of every pair.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml
threads: int = 1  # torch threads of this job

# %%
import pandas as pd
import torch

from repro import grid, names, prepare
from repro.io import read_json, read_jsonl
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
torch.set_num_threads(threads)
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %% [markdown]
# ## Data

# %%
sizes = prepare.make_data(config)
pd.Series(sizes, name="examples")

# %%
# Task families (synthetic data) or Dolly categories (real data) per split.
splits = dict(zip(["train", "dev"] + [f"test/{t}" for t in names.TEST_SETS], grid.data_files(config)))
kinds = {split: pd.Series([r.get("family", r.get("topic", "")) or "-" for r in read_jsonl(path)]).value_counts()
         for split, path in splits.items()}
pd.DataFrame(kinds).fillna(0).astype(int).head(20)

# %%
# Imported data: source file, rows kept and malformed rows skipped per split (data/sources.json).
report_file = grid.data_dir(config) / "sources.json"
pd.DataFrame(read_json(report_file)).T if config["data"]["source"] != "synthetic" else "synthetic data: generated"

# %% [markdown]
# ## Tokenizers

# %%
vocab_sizes = prepare.train_tokenizers(config)
pd.Series(vocab_sizes, name="vocabulary size")

# %% [markdown]
# ## Base models

# %%
parameters = prepare.init_models(config)
pd.Series(parameters, name="parameters")
