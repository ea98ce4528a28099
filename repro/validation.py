"""Validate a grid config (the workflow config of Tables 1-3): the schema, then the cross-references it cannot
express, as a table of named checks (``CHECKS``) run in order.

``validate_config`` reports every problem in one ``ConfigError`` whose lines name the key at fault and what was
expected; ``load_config`` reads a config file and validates it. What the workflow checks besides, before it plans
or runs (paths, model ids, the data; a study config), is ``repro.config``'s.

No torch import: the Snakefile imports this while building the DAG.
"""
from __future__ import annotations

import os
from typing import Callable

from . import architecture, names
from .names import ABLATION_METHODS, CROSS_VOCAB_METHODS, names_list
from .schema import SCHEMA_PATH, ConfigError, load_schema, load_yaml, schema_problems
from .settings import FIGURE_DEFAULTS, batch_problem, role_training
from .synthetic import check_sizes

# Training keys of earlier versions of the config and what replaced them (the schema alone would call them unknown).
RENAMED = {
    "seed": "'training.seeds', a list of training seeds (one run of every student row per seed), e.g. seeds: [10]",
    "temperature": "'training.kd_temperature' (the KD temperature tau; 'evaluation.temperature' is the sampling one)",
}


def validate_config(config: dict, schema_path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """Validate ``config`` in place and return it; raise ``ConfigError`` listing every problem. The cross-checks
    (``CHECKS``) run only on a config that matches the schema, so each may read the keys the schema requires."""
    problems = schema_problems(config, load_schema(schema_path))
    if isinstance(config.get("training"), dict):
        problems += [f"config key 'training.{old}' was replaced by {hint}" for old, hint in RENAMED.items()
                     if old in config["training"]]
    if not problems:
        problems = [problem for _, check in CHECKS for problem in check(config)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config and validate it; errors name the file."""
    config = load_yaml(path)
    try:
        return validate_config(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def _traits(method: str) -> names.Method:
    """The registry's traits of ``method``; a name the schema already rejected counts as an SFT-like row here."""
    return names.METHODS.get(method, names.METHODS["sft"])


def _tokenizers(config: dict) -> list[str]:
    """A model's tokenizer is a key of ``tokenizers``."""
    return [f"config key 'models.{name}.tokenizer': {spec['tokenizer']!r} is not a key of 'tokenizers' "
            f"({', '.join(sorted(config['tokenizers'])) or 'none defined'})"
            for name, spec in config["models"].items()
            if "tokenizer" in spec and spec["tokenizer"] not in config["tokenizers"]]


def _pairs(config: dict) -> list[str]:
    """A pair's teacher and student are keys of ``models``; a pair whose two models have different tokenizers uses
    no method that compares logits token by token."""
    problems = []
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
    return problems


def _divergences(config: dict) -> list[str]:
    """The KD methods of the grid have at least one divergence to run with."""
    used = set(config["methods"]).union(*(p.get("methods", []) for p in config["pairs"].values()))
    with_divergence = sorted(m for m in used if _traits(m).needs_divergence)
    if with_divergence and not config["divergences"]:
        return [f"config key 'divergences': methods {with_divergence} need at least one divergence"]
    return []


def _ablation(config: dict) -> list[str]:
    """Every pair of Table 3 (``ablation``) is a pair with the ablation's methods."""
    problems = []
    for name in config.get("ablation", []):
        if name not in config["pairs"]:
            problems.append(f"config key 'ablation': {name!r} is not a key of 'pairs'")
            continue
        missing = [m for m in ABLATION_METHODS if m not in config["pairs"][name].get("methods", config["methods"])]
        if missing:
            problems.append(f"config key 'ablation': pair {name!r} lacks the Table 3 methods {missing} (it needs "
                            f"{list(ABLATION_METHODS)} in its methods)")
    return problems


def _synthetic_sizes(config: dict) -> list[str]:
    """The synthetic data's splits fit its people (``repro.synthetic.check_sizes``)."""
    data = config["data"]
    if data.get("source") == "synthetic" and all(k in data for k in ("n_people", "n_train", "n_dev", "n_test")):
        if (size_problem := check_sizes(data["n_people"], data["n_train"], data["n_dev"], data["n_test"])):
            return [f"config key 'data.n_train': {size_problem}"]
    return []


def _architectures(config: dict) -> list[str]:
    """A built model's architecture, and a hub model's published one, are consistent (``repro.architecture``)."""
    problems = []
    for name, spec in config["models"].items():
        if "arch" in spec:
            problems += architecture.problems(spec, f"models.{name}")
        if "architecture" in spec:
            problems += architecture.problems(spec["architecture"], f"models.{name}.architecture")
    return problems


def _prompt_length(config: dict) -> list[str]:
    """The prompt fits in the training length, which includes it."""
    training = config["training"]
    if training["max_prompt_length"] > training["max_length"]:
        return [f"config key 'training.max_prompt_length': {training['max_prompt_length']} is more than "
                f"training.max_length ({training['max_length']}), which includes the prompt"]
    return []


def _positions(config: dict) -> list[str]:
    """A built model has a position for every token of the training length."""
    length = config["training"]["max_length"]
    return [f"config key 'models.{name}.max_positions': {spec.get('max_positions', 512)} positions "
            f"(512 when not given) are fewer than training.max_length ({length})"
            for name, spec in config["models"].items() if "id" not in spec and spec.get("max_positions", 512) < length]


def _figures(config: dict) -> list[str]:
    """Figure settings that refer to the rest of the config: the judge compares generations of an evaluation seed,
    and Figure 3 compares students of a divergence that the grid trains."""
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


def _batches(config: dict) -> list[str]:
    """Every role's training splits its global batch evenly (``repro.settings.batch_problem``, the rule's owner)."""
    return [f"config key 'pairs.{name}.{role}_training': {problem}"
            for name in config["pairs"] for role in ("teacher", "student")
            if (problem := batch_problem(role_training(config, name, role))) is not None]


# The cross-checks of a config that matches the schema, by name, in the order their problems are reported.
CHECKS: tuple[tuple[str, Callable[[dict], list[str]]], ...] = (
    ("tokenizers", _tokenizers),
    ("pairs", _pairs),
    ("divergences", _divergences),
    ("ablation", _ablation),
    ("synthetic sizes", _synthetic_sizes),
    ("architectures", _architectures),
    ("prompt length", _prompt_length),
    ("positions", _positions),
    ("figures", _figures),
    ("batches", _batches),
)
