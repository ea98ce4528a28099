# One job per table cell: train the row's model, keep the best dev checkpoint, evaluate it on the five test sets.


rule run_cell:
    """Train and evaluate one table cell ({pair}/{cell}, e.g. gpt2/kd-kl) through notebooks/run_cell.py."""
    input:
        unpack(cell_inputs),
    output:
        scores=f"{RESULTS}/runs/{{pair}}/{{cell}}/scores.json",
        notebook=f"{RESULTS}/runs/{{pair}}/{{cell}}/run_cell.ipynb",
        html=f"{RESULTS}/runs/{{pair}}/{{cell}}/run_cell.html",
    log:
        f"{RESULTS}/logs/run_cell/{{pair}}/{{cell}}.log",
    threads: 1
    run:
        render_notebook("run_cell", cell_params(wildcards, threads), output.notebook, log[0])
