# Aggregation of finished cells into the paper's tables.


rule make_tables:
    """Collect every run's scores into results/tables/table{n}.{md,tex,csv} (Tables 1-3)."""
    input:
        notebook=source_notebook("make_tables"),
        scores=[str(grid.scores_file(config, run)) for run in RUNS],
    output:
        tables=TABLES,
        notebook=f"{RESULTS}/notebooks/make_tables.ipynb",
        html=f"{RESULTS}/notebooks/make_tables.html",
    log:
        f"{RESULTS}/logs/make_tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_tables.tsv"
    threads: 1
    run:
        render_notebook("make_tables", {"workflow_config": config}, output.notebook, log[0])


rule make_claims:
    """The paper's claims checked on this run: results/tables/claims.{md,csv} (repro.claims)."""
    input:
        tables=TABLES,
        figures=CLAIMS_FIGURE_INPUTS,
    output:
        [str(p) for p in CLAIMS_FILES],
    log:
        f"{RESULTS}/logs/make_claims.log",
    run:
        write_text(log[0], "".join(f"wrote {p}\n" for p in claims.write_claims(config)))


rule make_report:
    """results/report/index.html: every table inline, every figure, training curve and rendered notebook linked."""
    input:
        report_inputs,
    output:
        REPORT,
    log:
        f"{RESULTS}/logs/make_report.log",
    run:
        path, missing = write_report(config)
        write_text(log[0], f"wrote {path}\n" + "".join(f"missing: {p}\n" for p in missing))
