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
# # Miniature data, tokenizers and base models
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

from repro import grid, prepare
from repro.config import load_config, validate_config
from repro.io import read_jsonl

torch.set_num_threads(threads)
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %% [markdown]
# ## Data

# %%
sizes = prepare.make_data(config)
pd.Series(sizes, name="examples")

# %%
families = {split: pd.Series([r["family"] for r in read_jsonl(path)]).value_counts()
            for split, path in zip(["train", "dev"] + [f"test/{t}" for t in grid.TEST_SETS],
                                   grid.data_files(config))}
pd.DataFrame(families).fillna(0).astype(int)

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
