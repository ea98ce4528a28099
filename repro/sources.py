"""The paper's real data: processed JSONL folders, and databricks-dolly-15k processed from the Hugging Face hub.

Both are turned into the layout every cell reads (``repro.grid.data_files``): ``train.jsonl``, ``dev.jsonl`` and
``test/{dolly,selfinst,vicuna,sni,unni}.jsonl``, each row checked by ``repro.rows.scan_examples`` (what is
suspicious, such as repeated rows, recorded as warnings in ``data/sources.json``).

Processed folders (``data.source: processed``) follow the layout of the paper's released data by default
(``PROCESSED_LAYOUT``); ``data.files`` overrides single paths. Dolly from the hub (``data.source: hub``) gets the
processing PAPER.md section 4 describes: the Alpaca template, a length filter (templated prompt at most
``max_prompt_tokens`` tokens of ``length_tokenizer``; the released dev/test files have at most 256 GPT-2 tokens of
prompt), a seeded shuffle, then ``dev_size`` dev and ``test_size`` test examples, the rest for training. The four
other test sets still come from the processed folder ``data.path``. No torch import here.
"""
from __future__ import annotations

import random
from pathlib import Path

import datasets
from transformers import AutoTokenizer

from . import grid, names
from .config import train_size_check
from .io import file_problem, write_json, write_jsonl
from .prompts import build_prompt
from .rows import PROCESSED_LAYOUT as PROCESSED_LAYOUT  # the layout's owner is repro.rows; read from here too
from .rows import data_warnings, file_message, processed_files, scan_examples

HUB_DEFAULTS = {"id": "databricks/databricks-dolly-15k", "dev_size": 1000, "test_size": 500, "seed": 42,
                "max_prompt_tokens": 256, "length_tokenizer": "gpt2"}


def _target(config: dict, split: str) -> Path:
    d = grid.data_dir(config)
    return d / f"{split}.jsonl" if split in ("train", "dev") else d / "test" / f"{split}.jsonl"


def import_processed(config: dict, splits=None) -> dict:
    """Check the processed files of ``splits`` (default: all) and write them into the cell layout.

    Every row is validated; with ``data.skip_malformed`` bad rows are left out and counted, otherwise the first
    one stops the run naming file and line. ``data.limits`` keeps the first N rows of a test set (the paper uses
    the first 10,000 UnNI examples). Returns ``{split: {"source", "rows", "skipped", "problems", "warnings"}}``
    (every skipped row's file, line and problem; ``repro.rows.data_warnings`` of the rows kept).
    """
    data = config["data"]
    files = processed_files(data)
    report = {}
    for split in splits or list(files):
        source = files[split]
        if (problem := file_problem(source)) is not None:
            error = FileNotFoundError if problem == "does not exist" else ValueError
            raise error(file_message(data, split, source, problem))
        scan = scan_examples(source, skip_malformed=data.get("skip_malformed", False))
        limit = data.get("limits", {}).get(split)
        rows = scan.rows[:limit]
        write_jsonl(_target(config, split), rows, allow_nan=False)
        report[split] = {"source": str(source), "rows": len(rows), "skipped": len(scan.skipped),
                         "problems": scan.skipped, "warnings": data_warnings(scan, split, limit)}
        if scan.skipped:  # to the job's console and log, every line, besides the report
            print(f"{source}: skipped {len(scan.skipped)} malformed rows (data.skip_malformed):", *scan.skipped,
                  sep="\n  ")
    return report


def process_dolly(records, count_prompt_tokens, max_prompt_tokens: int, dev_size: int, test_size: int,
                  seed: int) -> tuple[dict[str, list[dict]], dict]:
    """databricks-dolly-15k records (``instruction``, ``context``, ``response``, ``category``) -> train/dev/test
    rows in the processed format. Records whose templated prompt is longer than ``max_prompt_tokens`` (counted by
    ``count_prompt_tokens``) or whose response is empty are filtered out and counted. Returns the splits and a
    report of the filtering."""
    records = list(records)
    rows, too_long, empty = [], 0, 0
    for i, record in enumerate(records):
        for field in ("instruction", "context", "response"):
            if not isinstance(record.get(field), str):
                raise ValueError(f"dolly record {i}: field {field!r} must be a string, got {record.get(field)!r}")
        instruction, context, response = (record[f].strip() for f in ("instruction", "context", "response"))
        if not response:
            empty += 1
            continue
        prompt = build_prompt(instruction, context)
        if count_prompt_tokens(prompt) > max_prompt_tokens:
            too_long += 1
            continue
        rows.append({"instruction": instruction, "input": context, "output": response, "prompt": prompt,
                     "topic": record.get("category", "")})
    if len(rows) <= dev_size + test_size:
        raise ValueError(f"dolly: only {len(rows)} records pass the filters, fewer than dev_size + test_size + 1 = "
                         f"{dev_size + test_size + 1}")
    random.Random(seed).shuffle(rows)
    splits = {"dev": rows[:dev_size], "dolly": rows[dev_size:dev_size + test_size],
              "train": rows[dev_size + test_size:]}
    report = {"records": len(records), "kept": len(rows), "prompt_too_long": too_long,
              "empty_response": empty, **{f"{k}_rows": len(v) for k, v in splits.items()}}
    return splits, report


def import_hub_dolly(config: dict) -> dict:
    """Download databricks-dolly-15k (``data.hub.id``: a hub id, or a local folder/file ``datasets`` can read),
    process it (``process_dolly``) and write train, dev and the Dolly test set into the cell layout."""
    hub = {**HUB_DEFAULTS, **config["data"].get("hub", {})}
    source = hub["id"]
    if Path(source).is_file():
        dataset = datasets.load_dataset("json", data_files=source, split="train")
    else:
        dataset = datasets.load_dataset(source, split="train")
    tokenizer = AutoTokenizer.from_pretrained(hub["length_tokenizer"])

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    splits, report = process_dolly(dataset, count, hub["max_prompt_tokens"], hub["dev_size"], hub["test_size"],
                                   hub["seed"])
    for split, rows in splits.items():
        write_jsonl(_target(config, split), rows, allow_nan=False)
    return {"hub": {**hub, **report, "warnings": []}}


def import_real_data(config: dict) -> dict:
    """Fill the cell layout from ``data.source`` ``processed`` or ``hub``; write and return the report
    (``data/sources.json``) with the rows, skipped rows and warnings (``repro.rows.data_warnings``; a training set
    smaller than one global batch, ``repro.config.train_size_check``) of every split. A training set that no run
    can take an optimiser step on is an error."""
    source = config["data"]["source"]
    if source == "processed":
        report = import_processed(config)
        train, n_train, where = report["train"], report["train"]["rows"], report["train"]["source"]
    elif source == "hub":
        report = import_hub_dolly(config)
        report.update(import_processed(config, [s for s in names.TEST_SETS if s != "dolly"]))
        train, n_train = report["hub"], report["hub"]["train_rows"]
        where = f"{report['hub']['id']} (its training split)"
    else:
        raise ValueError(f"config key 'data.source': expected 'processed' or 'hub' here, got {source!r}")
    problems, warnings = train_size_check(config, n_train, where)
    if problems:
        raise ValueError(problems[0])
    train["warnings"] += warnings
    write_json(grid.data_dir(config) / "sources.json", report, allow_nan=False)
    return report
