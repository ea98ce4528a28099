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
# # Evaluation of one table cell on the five test sets
#
# The best checkpoint of a table cell (PAPER.md section 4) samples on Dolly, SelfInst, VicunaEval, S-NI and UnNI
# with every evaluation seed (temperature 1.0, top_p 1.0, top_k 0, no_repeat_ngram_size 6, left-padded prompts);
# each prediction is scored with Rouge-L against its references (max over references), averaged over examples,
# then over seeds. Used as a job of its own when `evaluation.separate_jobs` is on (the paper configuration).

# %% tags=["parameters"]
cell_id: str = "gpt2/kd-kl/seed10"  # run id, {pair}/{row}/seed{training seed}
pair: str = "gpt2"  # teacher/student pair key of the config
method: str = "kd"  # method key of the row
role: str = "student"  # "teacher" or "student"
divergence: str | None = "kl"  # divergence key, None when none
model: str = "results/models/base/gpt2_student"  # the base model the cell trained (recorded only)
teacher: str | None = "results/runs/gpt2/teacher/seed10/model"  # the teacher the cell distilled from (recorded only)
teacher_states: str | None = None  # the teacher-state cache the cell read (recorded only)
data_dir: str = "results/data"  # folder with test/<set>.jsonl
out_dir: str = "results/runs/gpt2/kd-kl/seed10"  # the cell's folder: model/ is evaluated, scores.json written
training: dict = {"lr": 2e-3, "epochs": 5, "dev_seeds": [10]}  # the cell's training settings (precision is used)
evaluation: dict = {"seeds": [10, 20, 30], "max_new_tokens": 64, "batch_size": 50}  # decoding settings
threads: int = 1  # torch threads of this job

# %%
import pandas as pd

from repro.cells import CellConfig, evaluate_cell, score_table
from repro.render import show_messages

show_messages()  # a warning prints here, not to stderr
cfg = CellConfig.from_parameters(globals())
cfg

# %%
scores = evaluate_cell(cfg)
score_table(scores)

# %% [markdown]
# Rouge-L per seed (rows: test sets).

# %%
pd.DataFrame({name: r["per_seed"] for name, r in scores["test_sets"].items()}).T.round(2)
