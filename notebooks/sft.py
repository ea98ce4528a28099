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
# # Supervised fine-tuning: the teacher row, or the student SFT row
#
# A row of Tables 1-2 of *Dual-Space Knowledge Distillation for Large Language Models* (PAPER.md sections 3-5):
# the teacher is fine-tuned on the instruction data (the "Teacher" row), and the student is fine-tuned the same way
# without a teacher (the "SFT" baseline). The recipe is the paper's: AdamW, cosine decay, a fixed global batch,
# per-token loss normalisation, full fine-tuning or LoRA; after every epoch the model samples on the dev set and the
# best checkpoint by dev Rouge-L is kept. In the miniature configuration this notebook then evaluates that checkpoint
# on the five test sets; the paper configuration evaluates in a job of its own (evaluate.ipynb).

# %% tags=["parameters"]
cell_id: str = "gpt2/teacher/seed10"  # run id, {pair}/{row}/seed{training seed}
pair: str = "gpt2"  # teacher/student pair key of the config
method: str = "sft"  # always sft here
role: str = "teacher"  # "teacher" (the teacher row) or "student" (the SFT baseline)
divergence: str = ""  # unused by SFT
model: str = "results/models/base/gpt2_teacher"  # model to fine-tune: hub id or local path
teacher: str = ""  # unused by SFT
teacher_states: str = ""  # unused by SFT
data_dir: str = "results/data"  # folder with train.jsonl, dev.jsonl and test/<set>.jsonl
out_dir: str = "results/runs/gpt2/teacher/seed10"  # where checkpoint, logs, generations and scores.json go
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

# %%
log = pd.DataFrame([r for r in read_jsonl(layout.train_log_file(out_dir)) if "step" in r])
history = pd.DataFrame(summary["history"])
fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_loss.plot(log["step"], log["loss"], label="cross-entropy")
ax_loss.set(xlabel="optimiser step", ylabel="per-token loss (nats)", title=f"{cell_id}: training loss")
ax_loss.legend()
ax_dev.plot(history["epoch"], history["dev_rougeL"], marker="o")
ax_dev.axvline(summary["best_epoch"], color="grey", linestyle=":", label="kept checkpoint")
ax_dev.set(xlabel="epoch", ylabel="dev Rouge-L", title="checkpoint choice")
ax_dev.legend()
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
