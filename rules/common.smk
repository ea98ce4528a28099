# Helpers shared by the rules: the grid of table cells and the command that renders a notebook.
import sys
from pathlib import Path

from repro import grid

# Tools run with this interpreter (the project's environment), whatever PATH holds.
PYTHON = sys.executable

CELLS = grid.cells(config)
RESULTS = str(grid.results_dir(config))
DATA_FILES = [str(p) for p in grid.data_files(config)]
TABLES = [str(p) for p in grid.table_files(config)]
TOKENIZER_FILES = [str(grid.tokenizer_dir(config, name) / "tokenizer.json") for name in config["tokenizers"]]
BASE_MODEL_FILES = [str(grid.base_model_dir(config, name) / "config.json") for name in grid.built_models(config)]
CELL_NAMES = "|".join(sorted({c.name for c in CELLS}))
PAIR_NAMES = "|".join(sorted(config["pairs"]))

wildcard_constraints:
    pair=PAIR_NAMES,
    cell=CELL_NAMES,
    notebook=r"[a-z_]+",


def render_notebook(notebook, params, output):
    """Render `notebooks/<notebook>.py` with papermill, parameters from a YAML file written beside the output.

    The rendered notebook is first written under a temporary name and renamed when it has run through, so a
    failed run leaves `<output>.failed.ipynb` to inspect and never a complete-looking notebook.
    """
    import yaml
    from repro.io import write_text

    out = Path(output)
    params_file = out.with_name(out.stem + ".params.yaml")
    write_text(params_file, yaml.safe_dump(params, sort_keys=False))
    running = out.with_name(out.stem + ".failed.ipynb")
    shell(
        f"{PYTHON} -m papermill --no-progress-bar --log-level WARNING -k python3 "
        f"{RESULTS}/.notebooks/{notebook}.ipynb {running} -f {params_file}"
    )
    running.replace(out)


rule convert_notebook:
    """Turn the jupytext source of a notebook into an .ipynb that papermill can run."""
    input:
        Path(workflow.basedir) / "notebooks" / "{notebook}.py",
    output:
        temp(RESULTS + "/.notebooks/{notebook}.ipynb"),
    log:
        RESULTS + "/logs/convert_notebook/{notebook}.log",
    shell:
        "{PYTHON} -m jupytext --quiet --to ipynb --output {output} {input} > {log} 2>&1"
