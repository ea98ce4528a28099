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
# # Figure 2: LLM-as-judge win rates of DSKD against vanilla KD (PAPER.md section 4)
#
# For every pair and divergence with both a KD and a DSKD student, an LLM judge compares their answers (the
# sampling-seed-10 generations of each row's run with the first training seed, on random Dolly test prompts) pairwise,
# A / B / tie, with the order of the two answers randomised. The judge is any OpenAI-compatible endpoint
# (`figures.judge.base_url`, `figures.judge.model`; the paper's is gpt-4-turbo at temperature 0.1). Its API key is
# read from the environment variable that `figures.judge.api_key_env` names and is never written anywhere. Without
# that variable this notebook records that no judge is configured, and the report says so. Verdicts are cached, so a
# rerun costs no calls. With `figures.judge.both_orders` every prompt is judged in both orders, and the table adds how
# often the two orders agree and the share of decisive verdicts won by the answer shown first (50% without position
# bias).

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml

# %%
from IPython.display import Markdown, display

from repro.analysis import make_figure2
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
figure2 = make_figure2(config)
display(Markdown(figure2["status"]["reason"] if not figure2["status"]["configured"] else "Judge configured."))

# %%
if figure2["summary"] is not None:
    display(Markdown(figure2["table"]))
    display(figure2["figure"])
