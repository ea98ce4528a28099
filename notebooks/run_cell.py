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
# # One table cell: train a model with one method, evaluate it on the five test sets
#
# A row of Tables 1-2 of *Dual-Space Knowledge Distillation for Large Language Models* (PAPER.md sections 2-5):
# the teacher row (SFT of the teacher), the student SFT row, or a distillation row (method and divergence).
# The model is trained with the paper's recipe (AdamW, cosine decay, global batch, per-token loss normalisation);
# after every epoch it samples on the dev set and the best checkpoint by dev Rouge-L is kept; that checkpoint then
# samples on Dolly, SelfInst, VicunaEval, S-NI and UnNI with every evaluation seed and is scored with Rouge-L.

# %% tags=["parameters"]
cell_id: str = "gpt2/kd-kl"  # table cell id, {pair}/{row}
pair: str = "gpt2"  # teacher/student pair key of the config
method: str = "kd"  # method key: sft, kd
role: str = "student"  # "teacher" (the teacher row) or "student"
divergence: str = "kl"  # divergence key for KD methods, "" otherwise
model: str = "results/models/base/gpt2_student"  # model to train: hub id or local path
teacher: str = "results/runs/gpt2/teacher/model"  # trained teacher checkpoint for KD methods, "" otherwise
data_dir: str = "results/data"  # folder with train.jsonl, dev.jsonl and test/<set>.jsonl
out_dir: str = "results/runs/gpt2/kd-kl"  # where checkpoint, logs, generations and scores.json go
training: dict = {"lr": 2e-3, "epochs": 6, "batch_size": 32, "micro_batch_size": 32, "seed": 10,
                  "dev_seeds": [10]}  # repro.training.TrainSettings fields
evaluation: dict = {"seeds": [10, 20, 30], "max_new_tokens": 96, "batch_size": 50}  # decoding settings
threads: int = 1  # torch threads of this job

# %%
import matplotlib.pyplot as plt
import pandas as pd

from repro.cells import CellConfig, evaluate_cell, run_training
from repro.io import read_jsonl

cfg = CellConfig(cell_id=cell_id, pair=pair, method=method, role=role, divergence=divergence, model=model,
                 teacher=teacher, data_dir=data_dir, out_dir=out_dir, training=training, evaluation=evaluation,
                 threads=threads)
cfg

# %% [markdown]
# ## Training

# %%
summary = run_training(cfg)  # several data-parallel processes when training.processes > 1
pd.DataFrame(summary["history"])

# %%
log = pd.DataFrame([r for r in read_jsonl(f"{out_dir}/train_log.jsonl") if "step" in r])
history = pd.DataFrame(summary["history"])
fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(10, 3.5))
for column in [c for c in ("loss", "ce", "kd") if c in log]:
    ax_loss.plot(log["step"], log[column], label=column)
ax_loss.set(xlabel="optimiser step", ylabel="per-token loss", title=f"{cell_id}: training loss")
ax_loss.legend()
ax_dev.plot(history["epoch"], history["dev_rougeL"], marker="o")
ax_dev.axvline(summary["best_epoch"], color="grey", linestyle=":", label="kept checkpoint")
ax_dev.set(xlabel="epoch", ylabel="dev Rouge-L", title="checkpoint choice")
ax_dev.legend()
fig.tight_layout()

# %% [markdown]
# ## Evaluation on the five test sets

# %%
scores = evaluate_cell(cfg)
table = pd.DataFrame({name: {"mean": r["mean"], "std": r["std"], "examples": r["n"]}
                      for name, r in scores["test_sets"].items()}).T
table.loc["Avg"] = [scores["avg"]["mean"], scores["avg"]["std"], table["examples"].sum()]
table.round(2)
