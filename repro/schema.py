"""The config schema (``config/schema.yaml``) and the reading of config files: the ground of the package.

``load_yaml`` reads a YAML mapping strictly (a key given twice is an error); ``schema_problems`` lists every way a
value breaks the schema, one readable line each naming its key; ``check_section`` holds settings built from Python
to the schema's entry of their config section, so that the schema is the one owner of their bounds. Every problem
is a ``ConfigError``.

Imports nothing of the package (and no torch): every other module may import it.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


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


@lru_cache(maxsize=4)
def _schema(path: str) -> dict:
    return load_yaml(path)


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """The schema at ``path`` (``config/schema.yaml`` by default), read once."""
    return _schema(str(path))


def non_finite(value, path=()) -> list[tuple[str, float]]:
    """``(key, number)`` of every NaN or infinite number in ``value`` (nested mappings and lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(_key(path), value)]
    if isinstance(value, dict):
        return [found for key, v in value.items() for found in non_finite(v, (*path, key))]
    if isinstance(value, list):
        return [found for i, v in enumerate(value) for found in non_finite(v, (*path, i))]
    return []


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


def schema_problems(instance: dict, schema: dict) -> list[str]:
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
    schema = load_schema(schema_path)
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
    problems = schema_problems(instance, {**schema, "$defs": load_schema().get("$defs", {})})
    if problems:
        raise ConfigError(f"invalid {what}:\n  " + "\n  ".join(problems))
