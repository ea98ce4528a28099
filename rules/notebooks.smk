# The notebooks are kept as jupytext py:percent sources; papermill runs the .ipynb made from them. The .ipynb are
# kept (not temporary): re-making one would make every job that ran it look out of date.

# Converting a notebook takes a second: on a cluster it runs where Snakemake runs, not as a job of its own.
localrules:
    convert_notebook,


rule convert_notebook:
    """Turn the jupytext source of a notebook into an .ipynb that papermill can run."""
    input:
        Path(workflow.basedir) / "notebooks" / "{notebook}.py",
    output:
        f"{RESULTS}/.notebooks/{{notebook}}.ipynb",
    log:
        f"{RESULTS}/logs/convert_notebook/{{notebook}}.log",
    run:
        render.convert(input[0], output[0], log[0])
