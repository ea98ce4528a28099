# The notebook rendering of every workflow mode (the grid and the study): jupytext source -> .ipynb -> papermill ->
# rendered .ipynb and standalone .html, each written atomically (repro.render). Needs RESULTS (the folder of the run)
# defined first.
import sys

from repro import render

# Tools run with this interpreter (the project's environment), whatever PATH holds.
PYTHON = sys.executable


wildcard_constraints:
    notebook=r"[a-z0-9_]+",


def source_notebook(name):
    """The runnable .ipynb of notebooks/<name>.py (made by rule convert_notebook)."""
    return f"{RESULTS}/.notebooks/{name}.ipynb"


def render_notebook(notebook, params, output, log):
    """Render notebook `notebook` with `params` into `output` and its HTML copy (repro.render.render)."""
    render.render(source_notebook(notebook), params, output, log, name=notebook, python=PYTHON)
