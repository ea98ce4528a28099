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
# # Distillation: one student row of Tables 1-3
#
# A distillation row of *Dual-Space Knowledge Distillation for Large Language Models* (PAPER.md sections 2-5):
# vanilla KD, KD w/ DSKD or its student-space-only ablation with one divergence (same vocabulary), or SeqKD, MinED,
# ULD or DSKD-CMA (different vocabularies), from the fine-tuned teacher of the pair. The student starts from its
# base model (not from the SFT student) and is trained with the paper's recipe; the best checkpoint by dev
# Rouge-L is kept. In the miniature configuration this notebook then evaluates that checkpoint on the five test
# sets; the paper configuration evaluates in a job of its own (evaluate.ipynb).

# %% tags=["parameters"]
cell_id: str = "gpt2/kd-kl/seed10"  # run id, {pair}/{row}/seed{training seed}
pair: str = "gpt2"  # teacher/student pair key of the config
method: str = "kd"  # method key: seqkd, kd, dskd, dskd_student_space, uld, mined, dskd_cma
role: str = "student"  # always student here
divergence: str = "kl"  # divergence key for KD methods and dskd_cma, "" otherwise
model: str = "results/models/base/gpt2_student"  # student base model: hub id or local path
teacher: str = "results/runs/gpt2/teacher/seed10/model"  # the pair's fine-tuned teacher checkpoint
teacher_states: str = "results/teacher_states/gpt2/states.pt"  # the pair's teacher-state cache ("": live teacher)
data_dir: str = "results/data"  # folder with train.jsonl, dev.jsonl and test/<set>.jsonl
out_dir: str = "results/runs/gpt2/kd-kl/seed10"  # where checkpoint, logs, generations and scores.json go
training: dict = {"lr": 2e-3, "epochs": 5, "batch_size": 32, "micro_batch_size": 32, "seed": 10,
                  "dev_seeds": [10]}  # repro.training.TrainSettings fields
evaluation: dict = {"seeds": [10, 20, 30], "max_new_tokens": 64, "batch_size": 50}  # decoding settings
threads: int = 1  # torch threads of this job
evaluate: bool = True  # also evaluate on the test sets here (miniature); False when a separate job does

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from repro import layout
from repro.cells import CellConfig, evaluate_cell, run_training, sample_generations, score_table
from repro.io import read_jsonl

cfg = CellConfig(cell_id=cell_id, pair=pair, method=method, role=role, divergence=divergence, model=model,
                 teacher=teacher, teacher_states=teacher_states, data_dir=data_dir, out_dir=out_dir,
                 training=training, evaluation=evaluation, threads=threads)
cfg

# %% [markdown]
# ## Training

# %%
summary = run_training(cfg)  # several data-parallel processes when training.processes > 1
pd.DataFrame(summary["history"])

# %% [markdown]
# Loss terms per optimiser step (per response token): the total, the cross-entropy with the data, the KD term, and
# DSKD's parts (`t2s_ce`: the projected teacher's cross-entropy, `t2s_kd`: KD in the student space, `s2t_kd`: KD in
# the teacher space); diagnostics: the projected teacher's token accuracy (`t2s_acc`), CMA's attention entropy,
# MinED's share of one-to-one aligned positions (`aligned`).

# %%
log = pd.DataFrame([r for r in read_jsonl(layout.train_log_file(out_dir)) if "step" in r])
history = pd.DataFrame(summary["history"])
terms = [c for c in ("loss", "ce", "kd", "t2s_ce", "t2s_kd", "s2t_kd") if c in log]
diagnostics = [c for c in ("t2s_acc", "attention_entropy", "aligned") if c in log]
fig, axes = plt.subplots(1, 3 if diagnostics else 2, figsize=(14 if diagnostics else 10, 3.5))
for column in terms:
    axes[0].plot(log["step"], log[column], label=column)
axes[0].set(xlabel="optimiser step", ylabel="per-token loss (nats)", title=f"{cell_id}: training loss")
axes[0].legend()
axes[1].plot(history["epoch"], history["dev_rougeL"], marker="o")
axes[1].axvline(summary["best_epoch"], color="grey", linestyle=":", label="kept checkpoint")
axes[1].set(xlabel="epoch", ylabel="dev Rouge-L", title="checkpoint choice")
axes[1].legend()
for column in diagnostics:
    axes[2].plot(log["step"], log[column], label=column)
if diagnostics:
    axes[2].set(xlabel="optimiser step", ylabel="value", title="diagnostics")
    axes[2].legend()
fig.tight_layout()

# %% [markdown]
# ## Evaluation on the five test sets

# %%
scores = evaluate_cell(cfg) if evaluate else None
if scores is None:
    print("evaluated by a separate job: see evaluate.ipynb in this folder")
else:
    display(score_table(scores))

# %% [markdown]
# A few test generations (the first prompts of each set, first sampling seed): what the scores measure.

# %%
if scores is not None:
    with pd.option_context("display.max_colwidth", 120):
        display(sample_generations(out_dir))
