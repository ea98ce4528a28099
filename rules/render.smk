# The notebook rendering of every workflow mode (the grid and the study): jupytext source -> .ipynb -> papermill ->
# rendered .ipynb and standalone .html, each written atomically. Needs RESULTS (the folder of the run) defined first.
import sys
from pathlib import Path

# Tools run with this interpreter (the project's environment), whatever PATH holds.
PYTHON = sys.executable


wildcard_constraints:
    notebook=r"[a-z0-9_]+",


def source_notebook(name):
    """The runnable .ipynb of notebooks/<name>.py (made by rule convert_notebook)."""
    return f"{RESULTS}/.notebooks/{name}.ipynb"


def convert_notebook(source, target, log):
    """Write the jupytext source `source` as the .ipynb `target` (atomically); note it in `log`."""
    import jupytext
    from repro.io import atomic_path, write_text

    with atomic_path(target) as tmp:
        jupytext.write(jupytext.read(source), tmp, fmt="ipynb")
    write_text(log, f"converted {source} -> {target}\n")


def render_notebook(notebook, params, output, log):
    """Render notebook `notebook` with papermill, parameters from a YAML file written beside the output.

    The rendered notebook is first written under a temporary name and renamed when it has run through, so a
    failed run leaves `<output>.failed.ipynb` to inspect and never a complete-looking notebook. Papermill's own
    messages go to `log`. Progress bars are off (in a rendered notebook they are frozen snapshots on stderr).
    An HTML copy (`<output>` with suffix .html) is written for readers without Jupyter. A kernel that dies before
    it answers (before any cell ran: two kernels starting at once can collide on a port) is started once more; the
    first attempt's messages stay in `<log>.kernel-start` beside the log.
    """
    import subprocess

    import yaml
    from repro.io import write_text

    out = Path(output)
    params_file = out.with_name(f"{out.stem}.params.yaml")
    write_text(params_file, yaml.safe_dump(params, sort_keys=False))
    running = out.with_name(f"{out.stem}.failed.ipynb")
    # no progress bars, and not tqdm's warning that a kernel without ipywidgets cannot draw them
    command = (f"TQDM_DISABLE=1 PYTHONWARNINGS='ignore:IProgress not found' {PYTHON} -m papermill "
               f"--no-progress-bar --log-level WARNING -k python3 {source_notebook(notebook)} {running} "
               f"-f {params_file} > {log} 2>&1")
    try:
        shell(command)
    except subprocess.CalledProcessError:
        text = Path(log).read_text(encoding="utf-8", errors="replace")
        if "Kernel died before replying to kernel_info" not in text:
            _raise_cause(notebook, text, log, running)
        Path(f"{log}.kernel-start").write_text(text, encoding="utf-8")
        try:
            shell(command)
        except subprocess.CalledProcessError:
            _raise_cause(notebook, Path(log).read_text(encoding="utf-8", errors="replace"), log, running)
    running.replace(out)
    export_html(out, out.with_suffix(".html"))


def _raise_cause(notebook, text, log, running):
    """Stop the job with the failing cell's exception in one line, so the console says why (not only "check log")."""
    from repro.io import failure_cause

    cause = failure_cause(text) or "no exception in the log (the kernel may have been killed)"
    raise RuntimeError(f"notebook {notebook} failed: {cause}\n  traceback: {log}\n  the notebook as far as it "
                       f"ran: {running}") from None


def export_html(notebook, target):
    """Write a rendered notebook as standalone HTML (plots embedded), atomically."""
    import nbformat
    from nbconvert import HTMLExporter
    from repro.io import write_text

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    write_text(target, body)
