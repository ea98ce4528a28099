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


if PRETRAINING:

    rule make_pretraining_corpus:
        """The pretraining corpus of the base models: the texts of other seeded worlds, none of which names a person
        or city of the task's world or repeats one of its prompts (repro.synthetic.pretraining_corpus)."""
        input:
            data=DATA_FILES,
        output:
            corpus=str(grid.pretraining_corpus_file(config)),
            report=str(grid.pretraining_corpus_file(config).with_suffix(".report.json")),
        log:
            f"{RESULTS}/logs/make_pretraining_corpus.log",
        run:
            from repro.prepare import make_pretraining_corpus

            make_pretraining_corpus(config, log[0])

    rule pretrain_base:
        """Pretrain the base model {name} by next-token prediction on the corpus (repro.pretrain)."""
        input:
            model=str(grid.base_model_dir(config, "{name}") / "config.json"),
            corpus=str(grid.pretraining_corpus_file(config)),
        output:
            model=str(grid.pretrained_model_dir(config, "{name}") / "config.json"),
        wildcard_constraints:
            name=BUILT_MODEL_NAMES,
        log:
            f"{RESULTS}/logs/pretrain_base/{{name}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/pretrain_base/{{name}}.tsv"
        threads: 1
        run:
            pretrain_model(wildcards.name, input.corpus, threads, log[0])
