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
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from repro import study
from repro.config import load_yaml
from repro.io import read_json, write_text
from repro.render import show_messages

show_messages()  # a warning prints here, not to stderr
config = study.validate_study(study_config or load_yaml("config/study.yaml"))
results = {name: read_json(study.comparisons_file(config, name))["comparisons"]
           for name in config["study"]["conditions"]}
table = study.study_table(results)
write_text(f"{config['study']['results_dir']}/study.md", table)
display(Markdown(table))

# %% [markdown]
# DSKD - KD per condition and divergence (points: the difference of mean Avg; bars: the 95% interval).

# %%
pairs = config["study"]["pairs"]
height = 0.6 * len(results) * len(config["study"]["divergences"]) + 1.5
fig, axes = plt.subplots(1, len(pairs), figsize=(7 * len(pairs), height), squeeze=False)
for ax, pair in zip(axes[0], pairs):
    labels, deltas, lows, highs = [], [], [], []
    for name, rows in results.items():
        for r in rows:
            if r["pair"] == pair and r["comparison"] == "DSKD - KD":
                labels.append(f"{name} ({r['divergence'].upper()})")
                deltas.append(r["delta"])
                lows.append(r["delta"] - r["low"])
                highs.append(r["high"] - r["delta"])
    y = range(len(labels))
    ax.errorbar(deltas, y, xerr=[lows, highs], fmt="o", capsize=3)
    ax.axvline(0, color="grey", linestyle=":")
    ax.set_yticks(list(y), labels)
    ax.set(xlabel="DSKD - KD, Avg Rouge-L", title=f"{pair}: DSKD - KD with 95% intervals over training runs")
fig.tight_layout()
fig.savefig(f"{config['study']['results_dir']}/study.png", dpi=120)
