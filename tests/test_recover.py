"""What a crashed run left, released before the next run (repro.recover); the whole path through `make repro`
after kill -9 is tests/test_workflow.py's crash test."""
import os
import subprocess
import time

import pytest

from repro import recover


def _leave_a_crash(folder):
    locks = folder / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("results/data/train.jsonl\n")
    (locks / "0.output.lock").write_text("results/runs/gpt2/sft/seed10/scores.json\n")
    tmp = folder / "results" / "runs" / ".scores.json.abc123.tmp"
    tmp.mkdir(parents=True)
    (tmp / "scores.json").write_text("{")
    (folder / "results" / "runs" / "scores.json").write_text("{}")  # a finished output stays
    return locks, tmp


def test_nothing_to_do_without_a_crash(tmp_path):
    assert recover.recover(tmp_path) == []


def test_a_stale_lock_and_temporaries_are_released(tmp_path):
    locks, tmp = _leave_a_crash(tmp_path)
    messages = recover.recover(tmp_path)
    assert len(messages) == 2
    assert "a stale lock of an interrupted run was released (2 lock files)" in messages[0]
    assert "1 temporary folders of unfinished writes removed" in messages[1]
    assert list(locks.iterdir()) == [] and not tmp.exists()
    assert (tmp_path / "results" / "runs" / "scores.json").read_text() == "{}"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="lists processes through /proc (Linux)")
def test_nothing_is_released_while_a_run_of_the_folder_is_going(tmp_path):
    locks, tmp = _leave_a_crash(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    # a process named snakemake in another folder does not count; one in this folder does
    elsewhere = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 30"], cwd=other)
    try:
        time.sleep(0.3)
        assert elsewhere.pid not in recover.running_snakemake(tmp_path)
        here = subprocess.Popen(["bash", "-c", "exec -a snakemake sleep 30"], cwd=tmp_path)
        try:
            time.sleep(0.3)
            assert recover.running_snakemake(tmp_path) == [here.pid]
            [message] = recover.recover(tmp_path)
            assert f"a Snakemake run is going (process {here.pid}); nothing released" in message
            assert len(list(locks.iterdir())) == 2 and tmp.exists()
        finally:
            here.kill()
            here.wait()
    finally:
        elsewhere.kill()
        elsewhere.wait()


def test_without_a_process_list_the_lock_stays_and_the_message_says_what_to_do(tmp_path, monkeypatch):
    locks, tmp = _leave_a_crash(tmp_path)
    assert recover.running_snakemake(tmp_path, proc=tmp_path / "no-proc") is None
    monkeypatch.setattr(recover, "running_snakemake", lambda directory: None)
    [message] = recover.recover(tmp_path)
    assert "cannot be told here (no /proc); if none is, run `make unlock`" in message
    assert len(list(locks.iterdir())) == 2 and tmp.exists()


@pytest.mark.parametrize("argv, expected", [
    (["/work/.venv/bin/python", "/work/.venv/bin/snakemake", "--cores", "2"], True),
    (["snakemake", "-n"], True),
    (["/usr/bin/python3", "-m", "snakemake", "--cores", "1"], True),
    (["/usr/bin/python3", "-m", "papermill", "results/.notebooks/sft.ipynb"], False),
    (["bash", "-c", "grep snakemake log.txt"], False),
    ([], False),
])
def test_what_counts_as_snakemake(argv, expected):
    assert recover._is_snakemake(argv) is expected


def test_the_results_dir_comes_from_the_config(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("results_dir: out\n")
    locks, _ = _leave_a_crash(tmp_path)
    tmp = tmp_path / "out" / ".x.json.zz.tmp"
    tmp.mkdir(parents=True)
    assert recover.main(["--directory", str(tmp_path), "--config", str(tmp_path / "run.yaml")]) == 0
    err = capsys.readouterr().err
    assert "stale lock" in err and f"{tmp_path / 'out'}: 1 temporary folders" in err
    assert not tmp.exists() and (tmp_path / "results" / "runs" / ".scores.json.abc123.tmp").exists()


def test_a_results_dir_outside_the_working_directory_releases_nothing(tmp_path, capsys):
    """recover removes temporaries under results_dir: one that points outside the working folder is refused (as the
    config check refuses it), and the temporaries there stay."""
    from repro import recover

    work, outside = tmp_path / "work", tmp_path / "outside"
    (outside / ".x.tmp").mkdir(parents=True)
    work.mkdir()
    config = work / "config.yaml"
    config.write_text("results_dir: ../outside\n")
    assert recover.main(["--directory", str(work), "--config", str(config)]) == 2
    assert "is not a folder inside the working directory" in capsys.readouterr().err
    assert (outside / ".x.tmp").is_dir()
