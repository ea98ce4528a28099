"""repro.render without Snakemake: a jupytext source converted and rendered with parameters, its HTML copy, clean
stderr (no progress bars), the one-line cause of a failing notebook, and the kernel-start retry."""
import json
import subprocess

import nbformat
import pytest

from repro import render

SOURCE = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
value = 1

# %%
from tqdm.auto import tqdm

for _ in tqdm(range(3)):
    pass
print(f"value is {value}")
if value < 0:
    raise ValueError(f"negative value {value}")
'''


@pytest.fixture()
def notebook(tmp_path):
    source = tmp_path / "tiny.py"
    source.write_text(SOURCE, encoding="utf-8")
    target = tmp_path / "tiny.ipynb"
    render.convert(source, target, tmp_path / "convert.log")
    assert "converted" in (tmp_path / "convert.log").read_text(encoding="utf-8")
    return target


def _outputs(path):
    cells = nbformat.read(str(path), as_version=4).cells
    return [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_render_runs_with_parameters_and_writes_html_without_stderr(notebook, tmp_path):
    out = tmp_path / "out" / "tiny.ipynb"
    out.parent.mkdir()
    render.render(notebook, {"value": 7}, out, tmp_path / "render.log")
    outputs = _outputs(out)
    assert any("value is 7" in o.get("text", "") for o in outputs)
    assert not [o for o in outputs if o.get("name") == "stderr"]  # no progress bars, no ipywidgets warning
    assert "value is 7" in out.with_suffix(".html").read_text(encoding="utf-8")
    assert "value: 7" in render.params_file(out).read_text(encoding="utf-8")
    assert not out.with_name("tiny.failed.ipynb").exists()


def test_a_failing_notebook_names_its_exception_and_leaves_the_partial_run(notebook, tmp_path):
    out = tmp_path / "tiny_run.ipynb"
    with pytest.raises(render.NotebookFailed, match="notebook tiny failed: ValueError: negative value -2"):
        render.render(notebook, {"value": -2}, out, tmp_path / "render.log")
    assert not out.exists() and not out.with_suffix(".html").exists()
    assert out.with_name("tiny_run.failed.ipynb").exists()


def test_a_kernel_that_dies_at_start_is_started_once_more(notebook, tmp_path, monkeypatch):
    calls = []
    real = subprocess.run

    def run(command, **kwargs):
        calls.append(command)
        if len(calls) == 1:  # the first attempt: the kernel died before it answered
            kwargs["stdout"].write(f"RuntimeError: {render.KERNEL_DIED}\n")
            return subprocess.CompletedProcess(command, 1)
        return real(command, **kwargs)

    monkeypatch.setattr(render.subprocess, "run", run)
    out = tmp_path / "retry.ipynb"
    log = tmp_path / "render.log"
    render.render(notebook, {"value": 3}, out, log)
    assert len(calls) == 2 and out.exists()
    assert render.KERNEL_DIED in (tmp_path / "render.log.kernel-start").read_text(encoding="utf-8")
    assert json.loads(out.read_text(encoding="utf-8"))["cells"]
