"""Atomic writes, JSON reading with the file named, and the cause of a failed notebook (repro.io)."""
import os
from pathlib import Path

import pytest

from repro.io import atomic_path, failure_cause, file_problem, read_json, write_json, write_jsonl


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_folder_replaces_old_content(tmp_path):
    target = tmp_path / "model"
    for content in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert [p.name for p in target.iterdir()] == ["new"]


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="broken.json: invalid JSON"):
        read_json(path)


def test_failure_cause_is_the_failing_cells_exception():
    log = """Traceback (most recent call last):
  File "papermill/execute.py", line 251, in raise_for_execution_errors
papermill.exceptions.PapermillExecutionError:
---------------------------------------------------------------------------
ValueError                                Traceback (most recent call last)
Cell In[2], line 1
----> 1 raise ValueError("data.n_train is too small: 3")

ValueError: data.n_train is too small: 3
"""
    assert failure_cause(log) == "ValueError: data.n_train is too small: 3"
    assert failure_cause("repro.schema.ConfigError: bad\n  more") == "repro.schema.ConfigError: bad"
    assert failure_cause("Killed\n") is None


def test_atomic_path_refuses_a_target_that_would_replace_a_parent_folder(tmp_path):
    """A tokenizer named '..' once made the data step replace the whole results folder: a target whose name is
    '..' (or none: the root, '.') is refused before anything is created or removed."""
    results = tmp_path / "results"
    (results / "tokenizers").mkdir(parents=True)
    (results / "earlier.json").write_text("{}")
    for target in (results / "tokenizers" / "..", results / "..", Path("/"), Path(".")):
        with pytest.raises(ValueError, match=r"it ends in .*nothing was written or removed"):
            with atomic_path(target) as tmp:
                tmp.mkdir()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "results", "results/earlier.json", "results/tokenizers"]


def test_data_writes_refuse_nan_and_infinity_naming_file_and_row(tmp_path):
    with pytest.raises(ValueError, match=r"rows.jsonl: not written: row 2: Out of range float values .*standard "
                                         r"JSON has no NaN or Infinity"):
        write_jsonl(tmp_path / "rows.jsonl", [{"a": 1.0}, {"a": float("nan")}], allow_nan=False)
    with pytest.raises(ValueError, match=r"report.json: not written: Out of range float values"):
        write_json(tmp_path / "report.json", {"x": [float("-inf")]}, allow_nan=False)
    assert list(tmp_path.iterdir()) == []
    write_jsonl(tmp_path / "log.jsonl", [{"loss": float("nan")}])  # a log may record a diverged loss as it is
    assert (tmp_path / "log.jsonl").read_text() == '{"loss": NaN}\n'


def test_file_problem_names_what_stands_where_a_file_belongs(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("{}\n")
    (tmp_path / "folder").mkdir()
    os.symlink("loop", tmp_path / "loop")
    os.symlink("nowhere.jsonl", tmp_path / "broken")
    os.symlink("good.jsonl", tmp_path / "link")
    assert file_problem(good) is None and file_problem(tmp_path / "link") is None
    assert file_problem(tmp_path / "missing") == "does not exist"
    assert file_problem(tmp_path / "folder") == "is a folder, not a file"
    assert file_problem(tmp_path / "loop") == "is a symbolic link that loops (it leads, through links, back to itself)"
    assert file_problem(tmp_path / "broken") == "is a symbolic link to nowhere.jsonl, which does not exist"
    assert file_problem(good / "inside") == "does not exist (a part of its path is a file, not a folder)"
