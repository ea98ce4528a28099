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
# # The paper's claims at a glance: the summary, the forest plot, DSKD - KD per table
#
# From the claims table the workflow wrote (`results/tables/claims.csv`, `repro.claims`; PAPER.md section 5 and
# the paper's Figures 1 and 3): the summary (counts of verdicts, one sentence per group of claims), and every claim
# as its difference with its 95% interval against 0 (the premise against its 5-point bar), grouped by claim,
# coloured and shaped by verdict, the paper's number marked where it gives one (`results/figures/claims.png`,
# `.pdf`). Then, from each table's CSV, the KD w/ DSKD - KD differences of Tables 1-2 per divergence, one panel
# per pair (`results/figures/table<n>_dskd_minus_kd.png`, `.pdf`). Every value is read from the CSV files.

# %% tags=["parameters"]
workflow_config: dict = {}  # the workflow configuration; empty: read config/config.yaml

# %%
from IPython.display import Markdown, display

from repro import claims, figures, grid
from repro.io import read_csv
from repro.render import show_messages
from repro.validation import load_config, validate_config

show_messages()  # a warning prints here, not to stderr
config = validate_config(workflow_config) if workflow_config else load_config("config/config.yaml")

# %%
rows = claims.read_claims(claims.claims_files(config)["csv"])
display(Markdown(claims.summary_markdown(rows)))
fig = figures.plot_claims(rows)
files = figures.save_figure(fig, grid.claims_figure_files(config)[0].with_suffix(""))

# %%
for table in grid.difference_tables(config):
    table_rows = read_csv(grid.table_file(config, table, "csv"))
    fig = figures.plot_table_differences(table_rows, table, claims.PAPER_DSKD_GAIN.get(table))
    files += figures.save_figure(fig, grid.difference_figure_files(config, table)[0].with_suffix(""))
print("written:", ", ".join(str(path) for path in files))
