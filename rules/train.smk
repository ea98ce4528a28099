# One job per table cell: train the row's model, keep the best dev checkpoint, evaluate it on the five test sets.


def cell_inputs(wildcards):
    cell = grid.find_cell(config, wildcards.pair, wildcards.cell)
    inputs = {"notebook": f"{RESULTS}/.notebooks/run_cell.ipynb", "data": DATA_FILES}
    model = config["pairs"][cell.pair][cell.role]
    if model in grid.built_models(config):
        inputs["model"] = str(grid.base_model_dir(config, model) / "config.json")
    if cell.needs_teacher:
        inputs["teacher"] = str(grid.scores_file(config, grid.teacher_cell(cell)))
    return inputs


rule run_cell:
    """Train and evaluate one table cell ({pair}/{cell}, e.g. gpt2/kd-kl) through notebooks/run_cell.py."""
    input:
        unpack(cell_inputs),
    output:
        scores=RESULTS + "/runs/{pair}/{cell}/scores.json",
        notebook=RESULTS + "/runs/{pair}/{cell}/run_cell.ipynb",
    threads: 1
    run:
        cell = grid.find_cell(config, wildcards.pair, wildcards.cell)
        render_notebook("run_cell", grid.cell_params(config, cell, threads), output.notebook)
