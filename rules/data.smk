# Data, tokenizers and base models of the miniature configuration (one job: each piece takes seconds).


rule prepare_data:
    """Generate the synthetic data, train the tokenizers, build the randomly initialised base models."""
    input:
        notebook=source_notebook("prepare_data"),
    output:
        data=DATA_FILES,
        tokenizers=TOKENIZER_FILES,
        models=BASE_MODEL_FILES,
        notebook=f"{RESULTS}/notebooks/prepare_data.ipynb",
        html=f"{RESULTS}/notebooks/prepare_data.html",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    threads: 1
    run:
        render_notebook("prepare_data", {"workflow_config": config, "threads": threads}, output.notebook, log[0])
