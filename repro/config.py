"""Load and validate workflow configurations (no torch import: the Snakefile imports this while building the DAG).

``validate_config`` checks a config against ``config/schema.yaml`` and then checks the cross-references the schema
cannot express (a pair's models exist, a built model's tokenizer exists). Every problem is reported in one
``ConfigError`` whose lines name the key at fault and what was expected.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from tokenizers import Tokenizer

from . import architecture, names
from .io import file_problem
from .names import ABLATION_METHODS, CROSS_VOCAB_METHODS, TEST_SETS, names_list
from .rows import count, data_warnings, file_message, processed_files, scan_examples
from .settings import training_value
from .synthetic import check_sizes

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


def _traits(method: str) -> names.Method:
    """The registry's traits of ``method``; a name the schema already rejected counts as an SFT-like row here."""
    return names.METHODS.get(method, names.METHODS["sft"])


def role_training(config: dict, pair: str, role: str) -> dict:
    """The training settings of a pair's ``role`` ("teacher" or "student"): the global ``training`` block with the
    pair's ``{role}_training`` overrides (the one place they are merged; ``repro.grid.cell_training`` adds a run's
    seed)."""
    return {**config["training"], **config["pairs"][pair][f"{role}_training"]}


class ConfigError(ValueError):
    """A configuration does not match the schema; the message lists every problem, one per line."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML itself keeps the last)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice (first at line {seen[key] + 1}); YAML would keep only the last",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``; a syntax error, a key given twice, an empty file or another top level raise
    ``ConfigError`` naming the file (and the line and column)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot be read: {e}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = e.problem or str(e)
        if "\\t" in what or "tab" in what:
            what += " (YAML indents with spaces, never tabs)"
        if not what.startswith("key "):  # a key given twice is valid YAML, refused here
            what = f"not valid YAML: {what}"
        raise ConfigError(f"{p}{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{p}: the file is empty; expected a mapping of config keys")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level, got a {type(data).__name__}")
    return data


def non_finite(value, path=()) -> list[tuple[str, float]]:
    """``(key, number)`` of every NaN or infinite number in ``value`` (nested mappings and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(_key(path), value)]
    if isinstance(value, dict):
        return [found for key, v in value.items() for found in non_finite(v, (*path, key))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in non_finite(v, (*path, i))]
    return []


@lru_cache(maxsize=4)
def _schema(path: str) -> dict:
    return load_yaml(path)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error) -> list[str]:
    """Turn one jsonschema error into readable lines naming the key."""
    where = _key(error.absolute_path)
    if where.endswith("api_key_env"):  # never echo what may be a key pasted by mistake (terminal, Snakemake's log)
        return [f"config key '{where}': expected the NAME of an environment variable (letters, digits and _, not "
                f"starting with a digit), such as OPENAI_API_KEY; the value given is not shown, as it may be a key "
                f"itself: put the key into that environment variable instead"]
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        return [f"config key '{where}.{u}' is unknown" + (f" (allowed keys: {', '.join(allowed)})" if allowed else "")
                if where != "<top level>" else f"config key '{u}' is unknown (allowed keys: {', '.join(allowed)})"
                for u in unknown]
    if error.validator == "required":
        return [f"config key '{where}': {error.message}"]
    if error.validator == "pattern" and "description" in error.schema:  # the schema says what the pattern means
        what = "the name" if "propertyNames" in error.absolute_schema_path else "the value"
        return [f"config key '{where}': {what} {error.instance!r} is not allowed: {error.schema['description']}"]
    if error.validator == "oneOf" and error.context:
        # Report the alternative the user evidently meant (the one with the fewest problems).
        by_branch: dict[int, list] = {}
        for sub in error.context:
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        best = min(by_branch.values(), key=len)
        return [line for sub in best for line in _describe(sub)]
    return [f"config key '{where}': {error.message}"]


def _schema_problems(instance: dict, schema: dict) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (and every non-finite number in it), one readable line each."""
    # JSON Schema counts 32.0 as an integer; Python's range() and the batch arithmetic do not
    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict)(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        problems += _describe(error)
    return problems + [f"config key '{key}': expected a finite number, got {'NaN' if math.isnan(v) else v}"
                       for key, v in non_finite(instance)]


def _section_schema(section: str, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    schema = _schema(str(schema_path))
    for key in section.split("."):
        schema = schema["properties"][key]
    return schema


def section_keys(section: str) -> frozenset[str]:
    """The keys the schema allows under the config key ``section`` (dotted, e.g. ``figures.toy``)."""
    return frozenset(_section_schema(section)["properties"])


def check_section(values: dict, section: str, what: str) -> None:
    """Check the settings ``values`` against the schema's entry for the config key ``section`` (dotted, e.g.
    ``figures.judge``), so that settings built from Python obey the same bounds as the config file: the schema is
    their one owner. Keys the section requires may be left out of ``values`` (``pretraining.enabled`` is the
    workflow's, not a setting). Raise ``ConfigError`` naming ``what`` and listing every problem under its config key."""
    schema, instance = {k: v for k, v in _section_schema(section).items() if k != "required"}, values
    for key in reversed(section.split(".")):
        schema, instance = {"type": "object", "properties": {key: schema}}, {key: instance}
    problems = _schema_problems(instance, {**schema, "$defs": _schema(str(SCHEMA_PATH)).get("$defs", {})})
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))


# Training keys of earlier versions of the config and what replaced them (the schema alone would call them unknown).
RENAMED = {
    "seed": "'training.seeds', a list of training seeds (one run of every student row per seed), e.g. seeds: [10]",
    "temperature": "'training.kd_temperature' (the KD temperature tau; 'evaluation.temperature' is the sampling one)",
}


def validate_config(config: dict, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Validate ``config`` in place and return it; raise ``ConfigError`` listing every problem."""
    problems = _schema_problems(config, _schema(str(schema_path)))
    if isinstance(config.get("training"), dict):
        problems += [f"config key 'training.{old}' was replaced by {hint}" for old, hint in RENAMED.items()
                     if old in config["training"]]
    if not problems:
        problems = _check_references(config)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def _check_references(config: dict) -> list[str]:
    problems = []
    for name, spec in config["models"].items():
        if "tokenizer" in spec and spec["tokenizer"] not in config["tokenizers"]:
            problems.append(f"config key 'models.{name}.tokenizer': {spec['tokenizer']!r} is not a key of "
                            f"'tokenizers' ({', '.join(sorted(config['tokenizers'])) or 'none defined'})")
    for name, pair in config["pairs"].items():
        missing = [role for role in ("teacher", "student") if pair[role] not in config["models"]]
        for role in missing:
            problems.append(f"config key 'pairs.{name}.{role}': {pair[role]!r} is not a key of 'models' "
                            f"({', '.join(sorted(config['models']))})")
        if missing:
            continue
        teacher, student = (config["models"][pair[role]] for role in ("teacher", "student"))
        if "tokenizer" in teacher and "tokenizer" in student and teacher["tokenizer"] != student["tokenizer"]:
            key = f"pairs.{name}.methods" if "methods" in pair else "methods"
            white_box = sorted(m for m in set(pair.get("methods", config["methods"])) if _traits(m).same_vocab)
            if white_box:
                problems.append(f"config key '{key}': {white_box} need a shared vocabulary, but pair {name!r} "
                                f"has tokenizers {teacher['tokenizer']!r} and {student['tokenizer']!r}; use "
                                f"{names_list(CROSS_VOCAB_METHODS)} for it")
    used = set(config["methods"]).union(*(p.get("methods", []) for p in config["pairs"].values()))
    with_divergence = sorted(m for m in used if _traits(m).needs_divergence)
    if with_divergence and not config["divergences"]:
        problems.append(f"config key 'divergences': methods {with_divergence} need at "
                        f"least one divergence")
    for name in config.get("ablation", []):
        if name not in config["pairs"]:
            problems.append(f"config key 'ablation': {name!r} is not a key of 'pairs'")
            continue
        missing = [m for m in ABLATION_METHODS if m not in config["pairs"][name].get("methods", config["methods"])]
        if missing:
            problems.append(f"config key 'ablation': pair {name!r} lacks the Table 3 methods {missing} (it needs "
                            f"{list(ABLATION_METHODS)} in its methods)")
    data = config["data"]
    if data.get("source") == "synthetic" and all(k in data for k in ("n_people", "n_train", "n_dev", "n_test")):
        if (size_problem := check_sizes(data["n_people"], data["n_train"], data["n_dev"], data["n_test"])):
            problems.append(f"config key 'data.n_train': {size_problem}")
    for name, spec in config["models"].items():
        if "arch" in spec:
            problems += architecture.problems(spec, f"models.{name}")
        if "architecture" in spec:
            problems += architecture.problems(spec["architecture"], f"models.{name}.architecture")
    training = config["training"]
    if training["max_prompt_length"] > training["max_length"]:
        problems.append(f"config key 'training.max_prompt_length': {training['max_prompt_length']} is more than "
                        f"training.max_length ({training['max_length']}), which includes the prompt")
    for name, spec in config["models"].items():
        if "id" not in spec and spec.get("max_positions", 512) < training["max_length"]:
            problems.append(f"config key 'models.{name}.max_positions': {spec.get('max_positions', 512)} positions "
                            f"(512 when not given) are fewer than training.max_length ({training['max_length']})")
    problems += _check_figures(config)
    for name, pair in config["pairs"].items():
        for role in ("teacher", "student"):
            merged = role_training(config, name, role)
            processes = training_value(merged, "processes")
            if merged["batch_size"] % (merged["micro_batch_size"] * processes):
                problems.append(f"config key 'pairs.{name}.{role}_training': micro_batch_size x processes "
                                f"({merged['micro_batch_size']} x {processes}) must divide "
                                f"training.batch_size ({merged['batch_size']})")
    return problems


def _check_figures(config: dict) -> list[str]:
    """Figure settings that refer to the rest of the config: the judge compares generations of an evaluation seed,
    and Figure 3 compares students of a divergence that the grid trains."""
    from .grid import FIGURE_DEFAULTS

    figures = config.get("figures") or {}
    problems = []
    seed = {**FIGURE_DEFAULTS["judge"], **(figures.get("judge") or {})}["generation_seed"]
    if seed not in config["evaluation"]["seeds"]:
        problems.append(f"config key 'figures.judge.generation_seed': {seed} is not one of evaluation.seeds "
                        f"{config['evaluation']['seeds']}, so it has no generations to compare")
    divergence = {**FIGURE_DEFAULTS["representation"], **(figures.get("representation") or {})}["divergence"]
    if divergence not in config["divergences"] and any(
            {"kd", "dskd"} <= set(p.get("methods", config["methods"])) for p in config["pairs"].values()):
        problems.append(f"config key 'figures.representation.divergence': {divergence!r} is not one of "
                        f"divergences {config['divergences']}, so Figure 3 would have no students to compare")
    return problems


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
    rule = _schema(str(SCHEMA_PATH))["$defs"]["name"]
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
            from .study import validate_study

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
            ids = entry.get("vocab_size") or _tokenizer_ids(entry["id"], workdir)
            if ids and ids > rows:
                problems.append(f"config key 'models.{name}.vocab_size': {rows} embedding rows are fewer than the "
                                f"{ids} token ids of tokenizer {spec['tokenizer']!r}")
        if "id" in spec:
            model_config = _read_json_file(spec["id"], "config.json", workdir)
            rows = (model_config or {}).get("vocab_size")
            ids = _tokenizer_ids(spec["id"], workdir)
            if rows and ids and ids > rows:
                problems.append(f"config key 'models.{name}.id': the tokenizer of {spec['id']!r} has {ids} token "
                                f"ids but its config.json only {rows} embedding rows (vocab_size)")
            published = spec.get("architecture", {}).get("vocab_size")
            if rows and published and rows != published:
                problems.append(f"config key 'models.{name}.architecture.vocab_size': {published}, but the "
                                f"config.json of {spec['id']!r} says {rows}")
    return problems


def _local_file(ref: str, filename: str, workdir: str | os.PathLike) -> Path | None:
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
    path = _local_file(ref, filename, workdir)
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path else None
    except (OSError, ValueError):
        return None


def _tokenizer_ids(ref: str, workdir: str | os.PathLike) -> int | None:
    """How many token ids the tokenizer of ``ref`` has (its tokenizer.json, added tokens included), or None."""
    path = _local_file(ref, "tokenizer.json", workdir)
    if path is None:
        return None
    try:
        return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    except Exception:  # an unreadable tokenizer.json fails its job with the library's own message
        return None


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config and validate it; errors name the file."""
    config = load_yaml(path)
    try:
        return validate_config(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


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

