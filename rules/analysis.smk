# Figures 1-3 and the training curves (PAPER.md sections 2 and 4): one notebook each, outputs under
# results/analysis (machine-readable) and results/figures (PNG and PDF, named after the paper's numbering).
# Figures 2 and 3 exist only where the config has the cells they compare (repro.grid.figure_numbers).


rule make_figure1:
    """Figure 1: the toy simulation, every divergence, different heads vs a shared head (needs no trained cell)."""
    input:
        notebook=source_notebook("figure1"),
    output:
        figures=FIGURE_FILES[1],
        results=str(analysis.figure1_outputs(config)["results"]),
        table=str(analysis.figure1_outputs(config)["table_md"]),
        notebook=f"{RESULTS}/notebooks/figure1.ipynb",
        html=f"{RESULTS}/notebooks/figure1.html",
    log:
        f"{RESULTS}/logs/make_figure1.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_figure1.tsv"
    threads: 1
    run:
        render_notebook("figure1", {"workflow_config": config, "threads": threads}, output.notebook, log[0])


if 2 in FIGURE_NUMBERS:

    rule make_figure2:
        """Figure 2: an LLM judge compares the DSKD and KD students' generations; without a judge endpoint configured
        it records so (the report says that Figure 2 needs one) and succeeds."""
        input:
            notebook=source_notebook("figure2"),
            scores=[str(grid.scores_file(config, grid.first_run(config, c))) for pair in grid.judge_comparisons(config)
                    for c in pair],
        params:
            # Whether the key's variable is set (a boolean, never the key): Snakemake reruns this step when it changes
            # (rerun trigger "params"), so setting the key later and rerunning the workflow draws Figure 2.
            judge_configured=JUDGE_CONFIGURED,
        output:
            results=str(analysis.figure2_outputs(config)["results"]),
            notebook=f"{RESULTS}/notebooks/figure2.ipynb",
            html=f"{RESULTS}/notebooks/figure2.html",
        log:
            f"{RESULTS}/logs/make_figure2.log",
        benchmark:
            f"{RESULTS}/benchmarks/make_figure2.tsv"
        threads: 1
        run:
            render_notebook("figure2", {"workflow_config": config}, output.notebook, log[0])


if 3 in FIGURE_NUMBERS:

    rule make_figure3:
        """Figure 3: representation distance of the SFT, KD and DSKD students to their teacher."""
        input:
            notebook=source_notebook("figure3"),
            data=DATA_FILES,
            summaries=FIGURE3_INPUTS,
        output:
            figures=FIGURE_FILES[3],
            results=str(analysis.figure3_outputs(config)["results"]),
            table=str(analysis.figure3_outputs(config)["table_md"]),
            notebook=f"{RESULTS}/notebooks/figure3.ipynb",
            html=f"{RESULTS}/notebooks/figure3.html",
        log:
            f"{RESULTS}/logs/make_figure3.log",
        benchmark:
            f"{RESULTS}/benchmarks/make_figure3.tsv"
        threads: 1
        resources:
            gpu=gpu_request(1),
        run:
            render_notebook("figure3", {"workflow_config": config, "threads": threads}, output.notebook, log[0],
                            gpu=resources.gpu)


rule plot_training_curves:
    """Loss terms, diagnostics and dev Rouge-L of every run, one figure per run."""
    input:
        notebook=source_notebook("training_curves"),
        summaries=[str(grid.train_summary_file(config, run)) for run in RUNS],
    output:
        figures=[str(p) for p in analysis.training_curve_files(config)],
        notebook=f"{RESULTS}/notebooks/training_curves.ipynb",
        html=f"{RESULTS}/notebooks/training_curves.html",
    log:
        f"{RESULTS}/logs/plot_training_curves.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_training_curves.tsv"
    threads: 1
    run:
        render_notebook("training_curves", {"workflow_config": config}, output.notebook, log[0])


rule plot_claims:
    """The claims at a glance, from claims.csv and the tables' CSV files: the forest plot of every claim
    (results/figures/claims.{png,pdf}) and the KD w/ DSKD - KD differences of each table that has them
    (results/figures/table<n>_dskd_minus_kd.{png,pdf})."""
    input:
        notebook=source_notebook("plot_claims"),
        claims=str(claims.claims_files(config)["csv"]),
        tables=TABLES,
    output:
        figures=[str(p) for p in grid.claims_plot_files(config)],
        notebook=f"{RESULTS}/notebooks/plot_claims.ipynb",
        html=f"{RESULTS}/notebooks/plot_claims.html",
    log:
        f"{RESULTS}/logs/plot_claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_claims.tsv"
    threads: 1
    run:
        render_notebook("plot_claims", {"workflow_config": config}, output.notebook, log[0])
