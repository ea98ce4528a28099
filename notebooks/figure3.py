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
# # Figure 3: representation distance between students and teachers (PAPER.md section 4)
#
# For each same-vocabulary pair, the SFT, vanilla-KD and DSKD students (the KD and DSKD students with the divergence
# `figures.representation.divergence`; every training run of each row) and their teacher read the first training
# examples (prompt and output each cut to 256 characters by default). On the last-layer hidden states of the response
# tokens, the **cosine distance** compares the token-token cosine-similarity matrices of student and teacher, and the
# **inner-product distance** the row-normalised token-token inner-product matrices (mean L1 distance of rows). One
# value per example; lower means the student's representation structure is closer to the teacher's.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml
threads: int = 1  # CPU threads for torch

# %%
from IPython.display import Markdown, display

from repro.analysis import make_figure3
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
figure3 = make_figure3(config, threads)
display(Markdown(figure3["table"]))

# %%
figure3["figure"]
