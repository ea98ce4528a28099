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
# # A training run: one row of Tables 1-3 with one training seed
#
# One row of *Dual-Space Knowledge Distillation for Large Language Models* (PAPER.md sections 2-5) trained once:
# the teacher row or the student SFT baseline (supervised fine-tuning), or a distillation row from the pair's
# fine-tuned teacher: vanilla KD, KD w/ DSKD or its student-space-only ablation with one divergence (same
# vocabulary), SeqKD, MinED, ULD or DSKD-CMA (different vocabularies). Every row starts from its base model and is
# trained with the paper's recipe (AdamW, cosine decay, the per-token loss normalisation, full fine-tuning or
# LoRA); after every epoch the model samples on the dev set and the best checkpoint by dev Rouge-L is kept. In the
# miniature configuration this notebook then evaluates that checkpoint on the five test sets; the paper
# configuration evaluates in a job of its own (evaluate.ipynb).

# %% tags=["parameters"]
cell_id: str = "gpt2/kd-kl/seed10"  # run id, {pair}/{row}/seed{training seed}
pair: str = "gpt2"  # teacher/student pair key of the config
method: str = "kd"  # method key: sft, seqkd, kd, dskd, dskd_student_space, uld, mined, dskd_cma
role: str = "student"  # "teacher" (the teacher row, always sft) or "student"
divergence: str | None = "kl"  # divergence key for KD methods and dskd_cma, None otherwise
model: str = "results/models/pretrained/gpt2_student"  # the base model to train: hub id or local path
teacher: str | None = "results/runs/gpt2/teacher/seed10/model"  # the pair's fine-tuned teacher (None for sft)
teacher_states: str | None = "results/teacher_states/gpt2/states.pt"  # the teacher-state cache (None: live teacher)
data_dir: str = "results/data"  # folder with train.jsonl, dev.jsonl and test/<set>.jsonl
out_dir: str = "results/runs/gpt2/kd-kl/seed10"  # where checkpoint, logs, generations and scores.json go
training: dict = {"lr": 2e-3, "epochs": 5, "batch_size": 32, "micro_batch_size": 32, "seed": 10,
                  "dev_seeds": [10]}  # repro.settings.TrainSettings fields
evaluation: dict = {"seeds": [10, 20, 30], "max_new_tokens": 64, "batch_size": 50}  # decoding settings
threads: int = 1  # torch threads of this job
evaluate: bool = True  # also evaluate on the test sets here (miniature); False when a separate job does

# %%
import pandas as pd
from IPython.display import display

from repro import layout
from repro.cells import CellConfig, evaluate_cell, run_training, sample_generations, score_table
from repro.figures import plot_training_curves
from repro.io import read_jsonl
from repro.render import show_messages

show_messages()  # a training warning prints here, not to stderr
cfg = CellConfig.from_parameters(globals())
cfg

# %% [markdown]
# ## Training

# %%
summary = run_training(cfg)  # several data-parallel processes when training.processes > 1
pd.DataFrame(summary["history"])

# %% [markdown]
# Loss terms per optimiser step (per response token): the total, the cross-entropy with the data and, for a
# distillation row, the KD term and DSKD's parts (`t2s_ce`: the projected teacher's cross-entropy, `t2s_kd`: KD in
# the student space, `s2t_kd`: KD in the teacher space); diagnostics: the gradient norm, the projected teacher's
# token accuracy (`t2s_acc`), CMA's attention entropy, MinED's share of one-to-one aligned positions (`aligned`);
# dev Rouge-L per epoch, the kept checkpoint marked.

# %%
seed = cfg.settings.seed
fig = plot_training_curves({f"seed {seed}": read_jsonl(layout.train_log_file(out_dir))}, cell_id,
                           kept={f"seed {seed}": summary["best_epoch"]})

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
