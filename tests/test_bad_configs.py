"""The corpora of malformed configurations and data, each case run through the workflow as a user would.

tests/data/bad_configs.yaml: every case stops `snakemake -n` before any job is planned, without a traceback and
without changing any file, and names its key (or file and line); so does `python -m repro.config`, which also names
the line of a YAML syntax error that Snakemake reads (and rejects with its own one-line message) before the Snakefile
runs. tests/data/odd_names.yaml: odd names and paths in every value that becomes a path, each in a REAL run, which
must stop the same way and leave every file as it was, earlier results and anything outside the working directory.
tests/data/bad_data.yaml (tests/corpus.py): every corrupted data folder stops a real run before its first job, in one
line naming the file and line at fault."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from corpus import DATA_CASES, build_data_case, data_config, set_key

from conftest import REPO

CASES = yaml.safe_load((REPO / "tests" / "data" / "bad_configs.yaml").read_text())
ODD_NAMES = yaml.safe_load((REPO / "tests" / "data" / "odd_names.yaml").read_text())
DATA_FAULTS = [case for case in DATA_CASES if "expect" in case]
MICRO = (REPO / "config" / "micro.yaml").read_text()
HOME = "@HOME@"  # a case's own folder, in the odd names


def _set(config: dict, dotted: str, value) -> None:
    set_key(config, dotted, value)


def _unset(config: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    del node[last]


def _text(case: dict) -> str:
    if "text" in case:
        return case["text"]
    if "replace" in case:
        old, new = case["replace"]
        assert old in MICRO, f"case {case['name']!r}: {old!r} is not in config/micro.yaml"
        return MICRO.replace(old, new, 1)
    config = yaml.safe_load(MICRO)
    for key, value in case.get("set", {}).items():
        _set(config, key, value)
    for key in case.get("unset", []):
        _unset(config, key)
    return yaml.safe_dump(config, sort_keys=False)


def _home(folder: Path) -> Path:
    """A case's folder: the working directory ``work/`` with an earlier run's results, and files beside it."""
    for keep in ("keep.txt", "outside/keep.txt", "work/results/earlier.txt", "work/results/data/train.jsonl"):
        (folder / keep).parent.mkdir(parents=True, exist_ok=True)
        (folder / keep).write_text(f"{keep}: not to be touched\n")
    return folder / "work"


def _files(folder: Path) -> dict[str, tuple]:
    """Every folder and file under ``folder`` (links not followed) with a file's size and time, but Snakemake's own
    ``.snakemake`` and the case's config."""
    found = {}
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".snakemake"]
        for name in dirs + files:
            path = Path(top) / name
            if name != "bad.yaml":
                info = path.lstat()
                found[str(path.relative_to(folder))] = (None, None) if name in dirs else (info.st_size,
                                                                                         info.st_mtime_ns)
    return found


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _workflow(path: Path, work: Path, real: bool) -> subprocess.CompletedProcess:
    """`snakemake` with config ``path`` in ``work``: a dry run, or (``real``) a real run of the data step."""
    how = ["--cores", "1", "prepare_data"] if real else ["-n"]
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                           str(path), "--directory", str(work), *how], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=120)


def _run(case: dict, folder: Path, real: bool = False) -> tuple:
    work = _home(folder)
    before = _files(folder)
    path = work / "bad.yaml"
    path.write_text(_text(case).replace(HOME, str(folder)))
    workflow = _workflow(path, work, real and "study" not in path.read_text())
    check = subprocess.run([sys.executable, "-m", "repro.config", str(path)], cwd=work,
                           env={**_env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    return str(path), workflow, check, before, _files(folder)


def _run_all(corpus: list[dict], root: Path, real: bool) -> dict:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda ic: _run(ic[1], root / f"case{ic[0]}", real), enumerate(corpus)))
    return {case["name"]: (case, *result) for case, result in zip(corpus, results)}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    return _run_all(CASES, tmp_path_factory.mktemp("bad_configs"), real=False)


@pytest.fixture(scope="module")
def odd_outcomes(tmp_path_factory):
    return _run_all(ODD_NAMES, tmp_path_factory.mktemp("odd_names"), real=True)


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 40 and len({c["name"] for c in CASES}) == len(CASES)
    assert len(ODD_NAMES) >= 20 and len({c["name"] for c in ODD_NAMES}) == len(ODD_NAMES)
    assert len(DATA_CASES) >= 25 and len({c["name"] for c in DATA_CASES}) == len(DATA_CASES)
    for key in ("tokenizer", "model", "pair", "results", "study"):  # every key that names a folder is tried
        assert any(key in c["name"].split() for c in ODD_NAMES), key


def _stopped_before_any_job(case: dict, path: str, workflow, check, before: dict, after: dict) -> None:
    console = workflow.stdout + workflow.stderr
    assert workflow.returncode != 0, console
    assert "Traceback" not in console and "File \"" not in console, console
    assert "Job stats" not in console and "rule " not in console  # no job planned
    assert after == before  # nothing created, changed or removed: earlier results, files beside the working folder
    if case.get("snakemake_reads_first"):  # YAML Snakemake cannot read: its own short message, ours via the check
        assert "Config file" in console, console
    else:
        assert "Configuration error, nothing was run:" in console and case["expect"] in console, console
    assert check.returncode == 1 and case["expect"] in check.stderr and path in check.stderr, check.stderr
    if "never" in case:
        assert case["never"] not in console + check.stdout + check.stderr


@pytest.mark.parametrize("name", [c["name"] for c in CASES])
def test_a_malformed_config_stops_before_any_job_naming_its_key(outcomes, name):
    _stopped_before_any_job(*outcomes[name])


@pytest.mark.parametrize("name", [c["name"] for c in ODD_NAMES])
def test_no_name_or_path_in_a_config_changes_a_file_outside_the_runs_own_outputs(odd_outcomes, name):
    """A real run (the data step, which once removed a parent folder) stops before any job and changes no file."""
    _stopped_before_any_job(*odd_outcomes[name])


@pytest.fixture(scope="module")
def data_outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_data")

    def run(index: int, case: dict):
        work = root / f"case{index}" / "work"
        work.mkdir(parents=True)
        build_data_case(case, work)
        path = work / "bad.yaml"
        path.write_text(yaml.safe_dump(data_config(case), sort_keys=False))
        return _workflow(path, work, real=True)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip([c["name"] for c in DATA_FAULTS], pool.map(lambda ic: run(*ic), enumerate(DATA_FAULTS))))


@pytest.mark.parametrize("name", [c["name"] for c in DATA_FAULTS])
def test_a_data_fault_stops_a_real_run_before_its_first_job_naming_file_and_line(data_outcomes, name):
    case = next(c for c in DATA_FAULTS if c["name"] == name)
    console = data_outcomes[name].stdout + data_outcomes[name].stderr
    assert data_outcomes[name].returncode != 0 and "Nothing was run:" in console and case["expect"] in console, console
    assert "Traceback" not in console and "File \"" not in console and "rule " not in console, console


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/abs", "a\\b"])
def test_a_name_that_never_met_the_schema_builds_no_path_outside_the_results(name):
    """The schema refuses these names (tests above); every path that repro.grid builds from a name checks it too, so
    a config built in Python without validation cannot reach a folder above the one it names."""
    from repro import grid

    config = yaml.safe_load(MICRO)
    run = grid.Cell(name, "sft", seed=10)
    for build in (lambda: grid.tokenizer_dir(config, name), lambda: grid.base_model_dir(config, name),
                  lambda: grid.pretrained_model_dir(config, name), lambda: grid.teacher_states_file(config, name),
                  lambda: grid.run_dir(config, run), lambda: grid.training_curve_file(config, run)):
        with pytest.raises(ValueError, match=r"is not a plain folder name .* would not lie inside the results folder"):
            build()
