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
# # When does DSKD help? KD against DSKD over the miniature's conditions
#
# Every condition of the study config is the base workflow config with an overlay (random or pretrained bases,
# teacher/student capacity gap, projector learning rate, training-set size, epochs), trained as a workflow of its own
# with the SFT, KD and DSKD rows of the study's pairs, every row over the study's training seeds. For each condition,
# pair and divergence: DSKD - KD, KD - SFT and DSKD - SFT (and the teacher's lead over SFT, the premise), each a
# difference of mean Avg Rouge-L over training runs with a 95% hierarchical-bootstrap interval (training runs, then
# prompts). An interval that includes 0 establishes no difference.

# %% tags=["parameters"]
study_config: dict = {}  # the study configuration; empty: read config/study.yaml

# %%
from IPython.display import Markdown, display

from repro import figures, study
from repro.io import write_text
from repro.render import show_messages
from repro.schema import load_yaml

show_messages()  # a warning prints here, not to stderr
config = study.validate_study(study_config or load_yaml("config/study.yaml"))
results = study.load_comparisons(config)
files = study.study_files(config)
table = study.study_table(results)
write_text(files["table"], table)
display(Markdown(table))

# %% [markdown]
# DSKD - KD per condition and divergence (points: the difference of mean Avg; bars: the 95% interval).

# %%
fig = figures.plot_study(results, config["study"]["pairs"], len(config["study"]["divergences"]))
figures.save_figure(fig, files["plot"].with_suffix(""), formats=("png",))
