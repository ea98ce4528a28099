# Aggregation of finished cells into the paper's tables.


rule make_tables:
    """Collect every cell's scores into results/tables/table{n}.{md,csv}."""
    input:
        notebook=RESULTS + "/.notebooks/make_tables.ipynb",
        scores=[str(grid.scores_file(config, c)) for c in CELLS],
    output:
        tables=TABLES,
        notebook=RESULTS + "/notebooks/make_tables.ipynb",
    threads: 1
    run:
        render_notebook("make_tables", {"workflow_config": config}, output.notebook)
