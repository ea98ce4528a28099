"""The corpus of malformed configurations (tests/data/bad_configs.yaml): every one stops `snakemake -n` before any
job is planned, without a traceback and without creating anything, and names its key (or file and line); so does
`python -m repro.config`, which also names the line of a YAML syntax error that Snakemake reads (and rejects with
its own one-line message) before the Snakefile runs."""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CASES = yaml.safe_load((REPO / "tests" / "data" / "bad_configs.yaml").read_text())
MICRO = (REPO / "config" / "micro.yaml").read_text()


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value


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


def _run(case: dict, folder: Path) -> tuple[str, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    folder.mkdir(parents=True)
    path = folder / "bad.yaml"
    path.write_text(_text(case))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    workflow = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                               "--configfile", str(path), "--directory", str(folder)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    check = subprocess.run([sys.executable, "-m", "repro.config", str(path)], cwd=folder,
                           env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    return str(path), workflow, check


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_configs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda ic: _run(ic[1], root / f"case{ic[0]}"), enumerate(CASES)))
    return {case["name"]: (case, *result) for case, result in zip(CASES, results)}


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 40 and len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name", [c["name"] for c in CASES])
def test_a_malformed_config_stops_before_any_job_naming_its_key(outcomes, name):
    case, path, workflow, check = outcomes[name]
    console = workflow.stdout + workflow.stderr
    assert workflow.returncode != 0, console
    assert "Traceback" not in console and "File \"" not in console, console
    assert "Job stats" not in console and "rule " not in console  # no job planned
    assert not (Path(path).parent / "results").exists()
    if case.get("snakemake_reads_first"):  # YAML Snakemake cannot read: its own short message, ours via the check
        assert "Config file" in console, console
    else:
        assert "Configuration error, nothing was run:" in console and case["expect"] in console, console
    assert check.returncode == 1 and case["expect"] in check.stderr and path in check.stderr, check.stderr
    if "never" in case:
        assert case["never"] not in console + check.stdout + check.stderr
