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
# # Figure 1: the toy simulation (PAPER.md section 2)
#
# A fixed teacher (100 two-dimensional hidden states, its own random head) and a student whose hidden states and
# head are trained by plain SGD to match the teacher's next-token distributions over many classes, once with the
# teacher's own head (**different heads**, vanilla KD) and once with the student's head on the teacher side too
# (**shared head**, the idea of DSKD), for every divergence. The scatter plots show the first repetition's hidden
# states before and after training (at the student's lowest loss); the loss curves are averaged over the
# repetitions. The table gives the final mean distance between each student vector and its teacher vector.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml
threads: int = 1  # CPU threads for torch

# %%
from IPython.display import Markdown, display

from repro.analysis import make_figure1
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
figure1 = make_figure1(config, threads, progress=False)  # no progress bar in the rendered notebook
print("settings:", figure1["results"]["settings"])
display(Markdown(figure1["table"]))

# %%
figure1["figure"]
