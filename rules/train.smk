# One job per table cell: train the row's model (notebooks/train.py) and keep the best dev checkpoint, then
# evaluate it on the five test sets: in the same job (the miniature: one notebook kernel per cell) or, with
# evaluation.separate_jobs (the paper configuration), in an evaluate job of its own.

if TEACHER_STATE_PAIRS:

    rule cache_teacher:
        """Run the trained teacher of {pair} once over the training set and keep its final hidden states at the
        response positions (and DSKD-CMA's statistics): the exact teacher-state cache its white-box cells read."""
        input:
            teacher=lambda wildcards: str(grid.train_summary_file(config, grid.teacher_run(
                config, grid.Cell(wildcards.pair, "sft", role="teacher")))),
            train=str(grid.data_dir(config) / "train.jsonl"),
        output:
            states=str(layout.teacher_states_file(RESULTS, "{pair}")),
            info=str(layout.teacher_states_info(layout.teacher_states_file(RESULTS, "{pair}"))),
        log:
            f"{RESULTS}/logs/cache_teacher/{{pair}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/cache_teacher/{{pair}}.tsv"
        threads: 1
        resources:
            gpu=gpu_request(1),
            runtime=lambda wildcards: cache_runtime(wildcards.pair),
            mem_mb=cache_mem_mb,
        run:
            build_teacher_states(wildcards.pair, input.train, output.states, threads, log[0], resources.gpu)


if SEPARATE_EVALUATION:

    rule train_cell:
        """Train one run of a table cell ({pair}/{cell}/seed{seed}, e.g. gpt2/kd-kl/seed10) through
        notebooks/train.py."""
        input:
            unpack(cell_inputs),
        output:
            summary=str(layout.train_summary_file(RUN)),
            notebook=str(layout.notebook_file(RUN, "train")),
            html=str(layout.notebook_file(RUN, "train", ".html")),
        log:
            f"{RESULTS}/logs/train_cell/{{pair}}/{{cell}}/seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train_cell/{{pair}}/{{cell}}/seed{{seed}}.tsv"
        threads: 1
        resources:
            gpu=cell_gpus,
            cpus_per_task=cell_cpus,
            runtime=lambda wildcards: cell_runtime(wildcards, "train"),
            mem_mb=lambda wildcards, rulename: cell_mem_mb(wildcards, rulename, ["train"]),
        run:
            render_notebook("train", cell_params(wildcards, threads, evaluate=False), output.notebook, log[0],
                            gpu=resources.gpu)

    rule evaluate_cell:
        """Evaluate the best checkpoint of one run on the five test sets through notebooks/evaluate.py."""
        input:
            notebook=source_notebook("evaluate"),
            summary=str(layout.train_summary_file(RUN)),
        output:
            scores=str(layout.scores_file(RUN)),
            notebook=str(layout.notebook_file(RUN, "evaluate")),
            html=str(layout.notebook_file(RUN, "evaluate", ".html")),
        log:
            f"{RESULTS}/logs/evaluate_cell/{{pair}}/{{cell}}/seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/evaluate_cell/{{pair}}/{{cell}}/seed{{seed}}.tsv"
        threads: 1
        resources:
            gpu=gpu_request(1),
            runtime=lambda wildcards: cell_runtime(wildcards, "evaluate"),
            mem_mb=lambda wildcards, rulename: cell_mem_mb(wildcards, rulename, ["evaluate"]),
        run:
            render_notebook("evaluate", grid.cell_params(config, cell_of(wildcards), threads), output.notebook, log[0],
                            gpu=resources.gpu)

else:

    rule run_cell:
        """Train one run of a table cell ({pair}/{cell}/seed{seed}) through notebooks/train.py and evaluate it
        there."""
        input:
            unpack(cell_inputs),
        output:
            summary=str(layout.train_summary_file(RUN)),
            scores=str(layout.scores_file(RUN)),
            notebook=str(layout.notebook_file(RUN, "train")),
            html=str(layout.notebook_file(RUN, "train", ".html")),
        log:
            f"{RESULTS}/logs/run_cell/{{pair}}/{{cell}}/seed{{seed}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/run_cell/{{pair}}/{{cell}}/seed{{seed}}.tsv"
        threads: 1
        resources:
            gpu=cell_gpus,
            cpus_per_task=cell_cpus,
            runtime=lambda wildcards: cell_runtime(wildcards, "train") + cell_runtime(wildcards, "evaluate"),
            mem_mb=lambda wildcards, rulename: cell_mem_mb(wildcards, rulename, ["train", "evaluate"]),
        run:
            render_notebook("train", cell_params(wildcards, threads, evaluate=True), output.notebook, log[0],
                            gpu=resources.gpu)
