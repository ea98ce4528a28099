"""The study of when DSKD helps: KD against DSKD (and both against SFT) over the miniature's conditions.

A study config (``config/study.yaml``) has one section, ``study``: a ``base`` workflow config, the ``pairs``,
``divergences`` and training ``seeds`` to compare, and ``conditions``, each an overlay merged into the base (nested
keys replace only what they name: ``{pretraining: {enabled: true}}``). Every condition becomes a full workflow
config of its own, restricted to the SFT, KD and DSKD rows of the study's pairs (``condition_config``), whose runs
are trained by a workflow of its own under ``<results_dir>/<condition>/results``; its comparisons (``compare``:
DSKD - KD, KD - SFT, DSKD - SFT, teacher - SFT, each a difference of mean Avg Rouge-L over training runs with the
hierarchical-bootstrap interval of ``repro.tables``) are written to ``<results_dir>/<condition>/comparisons.json``,
and the study notebook puts every condition side by side (table and plot).

No torch import: the Snakefile calls this while building the DAG.
"""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import yaml

from . import grid, tables
from .io import read_json, write_json, write_text
from .schema import ConfigError, load_yaml
from .validation import validate_config

STUDY_KEYS = {"base", "results_dir", "pairs", "divergences", "seeds", "conditions"}
COMPARISONS = (("DSKD - KD", "dskd", "kd"), ("KD - SFT", "kd", "sft"), ("DSKD - SFT", "dskd", "sft"))


def merge(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay`` merged in: mappings merge key by key, anything else replaces (a copy)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


PROJECT = Path(__file__).resolve().parent.parent  # a relative study.base is read from here


def validate_study(config: dict) -> dict:
    """Check the ``study`` section (and every condition's config); raise ``ConfigError`` naming the key."""
    study = config.get("study")
    if not isinstance(study, dict):
        raise ConfigError("config key 'study': expected a mapping with " + ", ".join(sorted(STUDY_KEYS)))
    unknown, missing = set(study) - STUDY_KEYS, STUDY_KEYS - set(study)
    if unknown or missing or set(config) != {"study"}:
        extra = sorted(set(config) - {"study"})
        raise ConfigError(f"config key 'study': unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
                          + (f"; a study config holds only 'study', not {extra}" if extra else ""))
    if not isinstance(study["conditions"], dict) or not study["conditions"]:
        raise ConfigError("config key 'study.conditions': expected a non-empty mapping of name -> overlay")
    for name, overlay in study["conditions"].items():
        if not isinstance(overlay, dict):
            raise ConfigError(f"config key 'study.conditions.{name}': expected a mapping (an overlay of the base "
                              f"config), got {type(overlay).__name__}")
        condition_config(config, name)
    return config


def condition_config(config: dict, name: str) -> dict:
    """The full workflow config of condition ``name``: the base with its overlay, only the SFT, KD and DSKD rows of
    the study's pairs, the study's divergences and seeds, results under ``<results_dir>/<name>/results``."""
    study = config["study"]
    base = load_yaml(PROJECT / study["base"])
    merged = merge(base, study["conditions"][name])
    missing = [p for p in study["pairs"] if p not in merged.get("pairs", {})]
    if missing:
        raise ConfigError(f"config key 'study.pairs': {missing} are not pairs of {study['base']}")
    merged["pairs"] = {p: {**merged["pairs"][p], "methods": ["sft", "kd", "dskd"]} for p in study["pairs"]}
    merged["divergences"] = list(study["divergences"])
    merged["ablation"] = []
    merged["training"]["seeds"] = list(study["seeds"])
    merged["results_dir"] = str(condition_dir(config, name) / "results")
    try:
        return validate_config(merged)
    except ConfigError as e:
        raise ConfigError(f"study condition {name!r}: {e}") from None


def condition_dir(config: dict, name: str) -> Path:
    return Path(config["study"]["results_dir"]) / name


def comparisons_file(config: dict, name: str) -> Path:
    return condition_dir(config, name) / "comparisons.json"


def study_files(config: dict) -> dict[str, Path]:
    """The study's own outputs in its results folder: the table of every condition (``study.md``) and the plot of
    DSKD - KD (``study.png``); the rules and the notebook read them here."""
    root = Path(config["study"]["results_dir"])
    return {"table": root / "study.md", "plot": root / "study.png"}


def load_comparisons(config: dict) -> dict[str, list[dict]]:
    """Every condition's comparisons (``comparisons_file``), by condition name."""
    return {name: read_json(comparisons_file(config, name))["comparisons"] for name in config["study"]["conditions"]}


def condition_targets(condition: dict) -> list[str]:
    """The scores files of every run of a condition's grid: what its workflow is asked for."""
    return [str(grid.scores_file(condition, run)) for run in grid.runs(condition)]


def compare(condition: dict) -> list[dict]:
    """The comparisons of one finished condition: per pair and divergence DSKD - KD, KD - SFT, DSKD - SFT, and per
    pair teacher - SFT, each ``{"pair", "divergence", "comparison", "delta", "low", "high", "runs"}``."""
    rows = []
    for pair in condition["pairs"]:
        sft = grid.Cell(pair, "sft")
        result = tables.compare(condition, grid.Cell(pair, "sft", role="teacher"), sft)
        rows.append(_row(pair, "", "teacher - SFT", result))
        for d in condition["divergences"]:
            cells = {"kd": grid.Cell(pair, "kd", divergence=d), "dskd": grid.Cell(pair, "dskd", divergence=d),
                     "sft": sft}
            for title, a, b in COMPARISONS:
                rows.append(_row(pair, d, title, tables.compare(condition, cells[a], cells[b])))
    return rows


def _row(pair: str, divergence: str, title: str, result: dict | None) -> dict:
    if result is None:
        raise ValueError(f"study: {pair} {title} ({divergence or 'no divergence'}) has no finished runs")
    return {"pair": pair, "divergence": divergence, "comparison": title, "delta": result["delta"],
            "low": result["low"], "high": result["high"], "runs": list(result["runs"])}


def run_condition(config: dict, name: str, cores: int, log: str, out: str, python: str) -> None:
    """Train every run of condition ``name`` with a workflow of its own (its config written beside its results),
    then write its comparisons to ``out``."""
    condition = condition_config(config, name)
    folder = condition_dir(config, name)
    config_file = folder / "config.yaml"
    write_text(config_file, yaml.safe_dump(condition, sort_keys=False))
    command = [python, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"),
               "--cores", str(cores), "--configfile", str(config_file), "--"] + condition_targets(condition)
    with open(log, "w", encoding="utf-8") as f:
        subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True)
    write_json(out, {"condition": name, "overlay": config["study"]["conditions"][name],
                     "comparisons": compare(condition)})


def study_table(results: dict[str, list[dict]]) -> str:
    """Markdown: one row per (condition, pair, divergence), one column per comparison, ``Δ [low, high]``."""
    titles = ["teacher - SFT"] + [t for t, _, _ in COMPARISONS]
    lines = ["| Condition | Pair | Divergence | " + " | ".join(titles) + " |", "|---|---|---|" + "---|" * len(titles)]
    for name, rows in results.items():
        teacher = {r["pair"]: r for r in rows if r["comparison"] == "teacher - SFT"}
        for key in dict.fromkeys((r["pair"], r["divergence"]) for r in rows if r["divergence"]):
            found = {r["comparison"]: r for r in rows if (r["pair"], r["divergence"]) == key}
            found["teacher - SFT"] = teacher[key[0]]
            lines.append(f"| {name} | {key[0]} | {key[1].upper()} | " + " | ".join(
                f"{found[t]['delta']:+.2f} [{found[t]['low']:+.2f}, {found[t]['high']:+.2f}]" for t in titles) + " |")
    return "\n".join(lines) + "\n"
