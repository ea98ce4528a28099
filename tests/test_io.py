"""Atomic writes, JSON reading with the file named, and the cause of a failed notebook (repro.io)."""
import pytest

from repro.io import atomic_path, failure_cause, read_json, write_json


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
    assert failure_cause("repro.config.ConfigError: bad\n  more") == "repro.config.ConfigError: bad"
    assert failure_cause("Killed\n") is None
