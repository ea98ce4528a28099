"""The workflow's checks of a config before it plans or runs a job (no torch import: the Snakefile imports this while
building the DAG), and ``python -m repro.config FILE...``, which runs them as the Snakefile does.

``check_workflow_config`` checks a config file as the Snakefile reads it: a study config (``repro.study``) or a grid
config (``repro.validation``: the schema and its cross-checks), then the model ids and the results folder;
``run_check`` what a real run needs before its first job (models in the cache, the data, the vocabularies). Every
problem is reported in one ``ConfigError`` (or list) whose lines name the key or file at fault and what was expected.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from tokenizers import Tokenizer

from .io import file_problem
from .names import TEST_SETS
from .rows import count, data_warnings, file_message, processed_files, scan_examples
from .schema import ConfigError, load_schema, load_yaml
from .settings import role_training, training_value
from .study import validate_study
from .validation import validate_config


def _inside(folder: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` (relative to ``folder``, or absolute) lies strictly inside ``folder``: by the path as
    written with ``..`` resolved, or by the real path (links followed), where the two spellings differ."""
    for norm in (os.path.abspath, os.path.realpath):
        base, target = norm(folder), norm(os.path.join(folder, path))
        if target != base and target.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def results_dir_problem(config: dict, workdir: str | os.PathLike = ".", key: str = "results_dir") -> str | None:
    """Why ``results_dir`` (the value of config key ``key`` in ``config``) cannot hold the run's outputs (None when
    it can), checked without creating anything: it must lie inside the working directory ``workdir`` (the run
    replaces folders under it), unless ``results_outside_workdir`` is true, and the folder, or its nearest existing
    parent, must be a writable directory."""
    value = config[key.rpartition(".")[2]]
    if not config.get("results_outside_workdir", False) and not _inside(workdir, value):
        return (f"config key '{key}': {value} is not a folder inside the working directory "
                f"({os.path.abspath(workdir)}), where a run may write and replace what it likes; name one inside it "
                f"(relative, such as results), or set results_outside_workdir: true to allow another place")
    target = Path(workdir) / value
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"config key '{key}': {target} cannot be created, {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == target else f"cannot be created: {probe} is not writable"
        return f"config key '{key}': {target} {what} (by user id {os.getuid()})"
    return None


def _local(ref: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """A local path of the config (relative to the working directory ``workdir``, or absolute, or ``~/...``)."""
    path = Path(ref).expanduser()
    return path if path.is_absolute() else Path(workdir) / path


def _hub_id(ref: str) -> bool:
    """Whether ``ref`` is a valid Hugging Face hub id (``name`` or ``owner/name``), asking no one."""
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def id_problems(config: dict, workdir: str | os.PathLike = ".") -> list[str]:
    """Model and tokenizer ids (and the hub data's) that are neither an existing local folder (or file, for
    ``data.hub.id``) nor a valid Hugging Face hub id, such as a mistyped absolute path: named here, in one line,
    instead of by a traceback of the first job that loads them."""
    refs = [(f"{section}.{name}.id", spec["id"]) for section in ("models", "tokenizers")
            for name, spec in config[section].items() if isinstance(spec, dict) and "id" in spec]
    if config["data"].get("source") == "hub":
        hub = config["data"].get("hub", {})
        refs += [(f"data.hub.{k}", hub[k]) for k in ("id", "length_tokenizer") if k in hub]
    problems = []
    for key, ref in refs:
        local = _local(ref, workdir)
        if (local.exists() if key == "data.hub.id" else local.is_dir()) or _hub_id(ref):
            continue
        found = (f"{local} is a file" if local.exists() else f"{local} {file_problem(local)}" if local.is_symlink()
                 else "no such local path")
        problems.append(f"config key '{key}': {ref!r} is neither a local {'file or ' if key == 'data.hub.id' else ''}"
                        f"folder ({found}) nor a valid Hugging Face hub id (name or owner/name: letters, digits, "
                        f"'-', '_' and '.')")
    return problems


def _plain_names(config: dict) -> list[str]:
    """Names of a study config that become folders, against the schema's pattern of names."""
    rule = load_schema()["$defs"]["name"]
    conditions = config["study"].get("conditions") if isinstance(config["study"], dict) else None
    return [f"config key 'study.conditions': the name {name!r} is not allowed: {rule['description']}"
            for name in (conditions if isinstance(conditions, dict) else ())
            if not isinstance(name, str) or not re.search(rule["pattern"], name)]


def check_workflow_config(config: dict, files: list) -> None:
    """Everything the Snakefile checks before it plans a job, in one place: each config file read again strictly
    (Snakemake's own reading keeps the last of a key given twice), then the study section (``repro.study``) or the
    grid config, then ``results_dir``. Raises ``ConfigError`` naming the file (when there is one) and every bad
    key."""
    for path in files:
        if "__use_yte__" in load_yaml(path):
            raise ConfigError(f"{path}: config key '__use_yte__': YTE templating is not supported: Snakemake runs its "
                              f"Python while reading the file, so the config that runs is not the file's text; write "
                              f"the values out")
    where = f"{files[0]}: " if len(files) == 1 else ""
    try:
        if "study" in config:
            if (problems := _plain_names(config)):
                raise ConfigError("\n  ".join(problems))
            validate_study(config)
            if (problem := results_dir_problem(config["study"], key="study.results_dir")) is not None:
                raise ConfigError(problem)
        else:
            validate_config(config)
            if (problems := id_problems(config)):
                raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
            if (problem := results_dir_problem(config)) is not None:
                raise ConfigError(problem)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def run_check(config: dict, workdir: str | os.PathLike = ".") -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of a real run before its first job, for a config that is valid (a dry run plans
    without them, so the Snakefile checks these only before a real run). Problems would make its first jobs fail: a
    model ``id`` that is neither a local folder nor in the Hugging Face cache while ``HF_HUB_OFFLINE`` forbids
    downloading it, and every fault of the processed data (``data_check``). Warnings: what is suspicious in the
    data."""
    problems = []
    used = {pair[role] for pair in config["pairs"].values() for role in ("teacher", "student")}
    for name in sorted(used):
        ref = config["models"][name].get("id")
        if ref is None or _local(ref, workdir).is_dir() or not _offline() or not _hub_id(ref):
            continue  # an id that is not a hub id: id_problems, in the config check
        if not isinstance(try_to_load_from_cache(ref, "config.json"), str):
            problems.append(f"config key 'models.{name}.id': {ref!r} is neither a local model folder nor in the "
                            f"Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; download it first "
                            f"(without HF_HUB_OFFLINE) or set the id to a local save_pretrained folder")
    problems += vocabulary_problems(config, workdir)
    data_problems, warnings = data_check(config, workdir)
    return problems + data_problems, warnings


def run_problems(config: dict, workdir: str | os.PathLike = ".") -> list[str]:
    """The problems of ``run_check``: what would make the first jobs of a real run fail."""
    return run_check(config, workdir)[0]


def data_check(config: dict, workdir: str | os.PathLike = ".") -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of the data a run would import, before any job: every processed file of
    ``data.path`` that the run reads (all of them; with ``data.source: hub`` the four test sets besides Dolly)
    must be a readable file, and every row of it good (``repro.rows.scan_examples``: the file and line of the first
    malformed row, unless ``data.skip_malformed``); the training set must allow an optimiser step
    (``train_size_check``). Warnings: ``repro.rows.data_warnings`` (malformed rows that will be skipped among
    them), a training set smaller than one global batch."""
    data = config["data"]
    if data.get("source") == "synthetic":
        return train_size_check(config, data["n_train"], "config key 'data.n_train'")
    if not _local(data["path"], workdir).is_dir():
        return [f"config key 'data.path': {data['path']} is not a folder (expected the processed files: "
                f"dolly/train.jsonl, dolly/dev.jsonl, ...; see config/README.md)"], []
    files = processed_files(data)
    splits = list(files) if data["source"] == "processed" else [s for s in TEST_SETS if s != "dolly"]
    problems, warnings = [], []
    for split in splits:
        path = _local(files[split], workdir)
        if (problem := file_problem(path)) is not None:
            problems.append(file_message(data, split, files[split], problem))
            continue
        try:
            scan = scan_examples(path, skip_malformed=data.get("skip_malformed", False))
        except ValueError as e:
            problems.append(str(e))
            continue
        limit = data.get("limits", {}).get(split)
        warnings += data_warnings(scan, split, limit)
        if split == "train":
            size_problems, size_warnings = train_size_check(config, len(scan.rows[:limit]), str(path))
            problems, warnings = problems + size_problems, warnings + size_warnings
    return problems, warnings


def train_size_check(config: dict, n_rows: int, where: str) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of a training set of ``n_rows`` examples (``where``: its file or key): fewer than
    one global batch is a warning (every epoch is then a single optimiser step on a partial batch); fewer than the
    data-parallel processes of a run is a problem (a process without an example has nothing to take the step on)."""
    batch = config["training"]["batch_size"]
    examples = count(n_rows, "training example")
    warnings = [f"{where}: {examples}, fewer than one global batch (training.batch_size {batch}): every epoch is a "
                f"single optimiser step on a partial batch"] if n_rows < batch else []
    processes = {(training_value(role_training(config, pair, role), "processes"), f"pairs.{pair}.{role}_training")
                 for pair in config["pairs"] for role in ("teacher", "student")}
    most, key = max(processes)
    problems = [f"{where}: {examples} cannot give each of the {most} data-parallel processes of {key} an example, "
                f"so its runs cannot take an optimiser step"] if n_rows < most else []
    return problems, warnings


def vocabulary_problems(config: dict, workdir: str | os.PathLike = ".") -> list[str]:
    """Tokenizers that do not fit their models, where both can be read before any job runs: a built model whose
    ``vocab_size`` (embedding rows) is below its tokenizer's token ids, and a model folder or hub model whose
    config.json's ``vocab_size`` is below the ids of the tokenizer beside it, or differs from the config's
    published ``architecture.vocab_size``."""
    problems = []
    for name, spec in config["models"].items():
        rows = spec.get("vocab_size")
        if "arch" in spec and rows and spec["tokenizer"] in config["tokenizers"]:
            entry = config["tokenizers"][spec["tokenizer"]]
            ids = entry.get("vocab_size") or tokenizer_ids(entry["id"], workdir)
            if ids and ids > rows:
                problems.append(f"config key 'models.{name}.vocab_size': {rows} embedding rows are fewer than the "
                                f"{ids} token ids of tokenizer {spec['tokenizer']!r}")
        if "id" in spec:
            model_config = _read_json_file(spec["id"], "config.json", workdir)
            rows = (model_config or {}).get("vocab_size")
            ids = tokenizer_ids(spec["id"], workdir)
            if rows and ids and ids > rows:
                problems.append(f"config key 'models.{name}.id': the tokenizer of {spec['id']!r} has {ids} token "
                                f"ids but its config.json only {rows} embedding rows (vocab_size)")
            published = spec.get("architecture", {}).get("vocab_size")
            if rows and published and rows != published:
                problems.append(f"config key 'models.{name}.architecture.vocab_size': {published}, but the "
                                f"config.json of {spec['id']!r} says {rows}")
    return problems


def local_file(ref: str, filename: str, workdir: str | os.PathLike) -> Path | None:
    """``filename`` of a model or tokenizer given by local folder or hub id: the folder's, or the Hugging Face
    cache's (never downloaded here); None when neither has it."""
    folder = (Path(workdir) / ref).expanduser()
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    try:
        cached = try_to_load_from_cache(ref, filename)
    except Exception:  # not a valid hub id: the model id check reports it
        return None
    return Path(cached) if isinstance(cached, str) else None


def _read_json_file(ref: str, filename: str, workdir: str | os.PathLike) -> dict | None:
    path = local_file(ref, filename, workdir)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None


def tokenizer_ids(ref: str, workdir: str | os.PathLike) -> int | None:
    """How many token ids the tokenizer of ``ref`` has (its tokenizer.json, added tokens included), or None."""
    path = local_file(ref, "tokenizer.json", workdir)
    if path is None:
        return None
    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception:  # an unreadable tokenizer.json fails its job with the library's own message
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m repro.config FILE...``: check workflow config files as the Snakefile does (a study config too),
    before Snakemake reads them; Snakemake's own reader reports a YAML syntax error without its file and line."""
    parser = argparse.ArgumentParser(prog="python -m repro.config", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="workflow config YAML files")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            check_workflow_config(load_yaml(path), [path])
        except ConfigError as e:
            failed += 1
            message = str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
            print(f"Configuration error:\n{message}", file=sys.stderr)
        else:
            print(f"{path}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

