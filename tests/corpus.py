"""The corpus of corrupted data folders (tests/data/bad_data.yaml): each case built from the small real folder
tests/data/processed, with the micro config that reads it (tests/test_sources.py runs the check and the import,
tests/test_bad_configs.py a real workflow run)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from conftest import REPO
from repro.rows import PROCESSED_LAYOUT

DATA_CASES = yaml.safe_load((REPO / "tests" / "data" / "bad_data.yaml").read_text(encoding="utf-8"))
SAMPLE = REPO / "tests" / "data" / "processed"
LONG = "word " * 1_000_000  # a 5 MB response


def set_key(config: dict, dotted: str, value) -> None:
    """Set the config key ``dotted`` (a list index is a number: training.seeds.0), making mappings on the way."""
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value


def data_config(case: dict) -> dict:
    """The micro config reading the processed folder ``data`` of the working directory, with a global batch of 4
    (the sample's training set has 8 rows) and the case's ``set`` keys."""
    config = yaml.safe_load((REPO / "config" / "micro.yaml").read_text(encoding="utf-8"))
    config["data"] = {"source": "processed", "path": "data"}
    config["pretraining"] = {"enabled": False}
    config["training"].update(batch_size=4, micro_batch_size=2)
    for key, value in case.get("set", {}).items():
        set_key(config, key, value)
    return config


def build_data_case(case: dict, work: Path) -> Path:
    """Copy the sample folder to ``work/data`` and corrupt the file of ``case``; return that file's path."""
    data = work / "data"
    shutil.copytree(SAMPLE, data)
    path = data / PROCESSED_LAYOUT[case.get("file", "train")]
    make = case.get("make")
    if make is not None:
        path.unlink()
        if make == "empty":
            path.write_bytes(b"")
        elif make == "blank":
            path.write_bytes(b"\n\n  \n")
        elif make == "folder":
            path.mkdir()
        elif make == "loop":
            os.symlink(path.name, path)
        elif make == "broken_link":
            os.symlink("nowhere.jsonl", path)
        else:
            assert make == "missing", f"case {case['name']!r}: unknown make {make!r}"
        return path
    content = path.read_bytes()
    if "replace" in case:
        old, new = case["replace"]
        assert old.encode() in content, f"case {case['name']!r}: {old!r} is not in {path}"
        content = content.replace(old.encode(), new.encode(case.get("encoding", "utf-8")), 1)
    if "keep_lines" in case:
        content = b"".join(content.splitlines(keepends=True)[:case["keep_lines"]])
    if case.get("duplicate"):
        content += content
    if case.get("line_ends") == "crlf":
        content = content.replace(b"\n", b"\r\n")
    content = case.get("prefix", "").encode() + content + case.get("append", "").replace("{{LONG}}", LONG).encode()
    path.write_bytes(content)
    return path
