"""The processed instruction data: the released folder's layout, and every row of its JSONL files read and checked.

Torch-free, so that the workflow checks the data before its first job (``repro.config.run_check``) with the same
code that imports it (``repro.sources``) and that training reads it with (``repro.data``).

A row is a JSON object with ``instruction``, ``input`` (may be missing: empty), ``output`` (a non-empty string, or a
non-empty list of non-empty strings: the references) and ``prompt`` (may be missing: built with the paper's template,
PAPER.md section 4; never empty). A malformed row stops the file with its file and line, or, with
``data.skip_malformed``, is left out and listed: bytes that are not UTF-8, a line that is not a JSON object, ``NaN``
or ``Infinity`` (not JSON: they would be copied into the imported data), text that UTF-8 cannot encode (a lone
surrogate escape such as ``"\\ud800"``), a missing or mistyped field, an empty prompt or response. Accepted as they
are: a UTF-8 byte-order mark at the start of the file, CRLF line ends, blank lines, extra keys. Accepted with a
warning (``data_warnings``, one line per kind and file): rows that give a key twice (JSON keeps the last value), rows
that repeat an earlier row's prompt and output, and several references in a set other than S-NI and UnNI.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .prompts import build_prompt

REQUIRED_FIELDS = ("instruction", "input", "output", "prompt")
# Our split name -> file inside a processed data folder (the released data's layout).
PROCESSED_LAYOUT = {
    "train": "dolly/train.jsonl",
    "dev": "dolly/dev.jsonl",
    "dolly": "dolly/test.jsonl",
    "selfinst": "self-inst/test.jsonl",
    "vicuna": "vicuna/test.jsonl",
    "sni": "sinst/11_/test.jsonl",
    "unni": "uinst/11_/test.jsonl",
}
# The test sets whose examples have several references (PAPER.md section 4); elsewhere a list is suspicious.
MULTI_REFERENCE_SETS = ("sni", "unni")
_BOM = b"\xef\xbb\xbf"


def processed_files(data: dict) -> dict[str, Path]:
    """Split name -> source file of a processed folder (``data.path`` joined with the layout and ``data.files``)."""
    layout = {**PROCESSED_LAYOUT, **data.get("files", {})}
    return {split: Path(data["path"]) / rel for split, rel in layout.items()}


def source_key(data: dict, split: str) -> str:
    """The config key that places ``split``'s file: ``data.files.<split>`` where given, else ``data.path``."""
    return f"data.files.{split}" if split in data.get("files", {}) else "data.path"


def count(n: int, thing: str) -> str:
    """``n`` with ``thing`` in the singular or plural: "1 row", "2 rows"."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def file_message(data: dict, split: str, source: Path, problem: str) -> str:
    """One line naming the config key that places ``split``'s file ``source`` and what is wrong with it
    (``problem``: ``repro.io.file_problem``'s phrase)."""
    key = source_key(data, split)
    hint = (f"; set data.files.{split} to its path inside {data['path']}"
            if key == "data.path" and problem == "does not exist" else "")
    return f"config key '{key}': {source} (the {split!r} file) {problem}{hint}"


def references(row: dict) -> list[str]:
    """The reference answers of an example (``output`` as a list)."""
    return list(row["output"]) if isinstance(row["output"], list) else [row["output"]]


def _unencodable(value, path: tuple = ()) -> str | None:
    """Where a parsed JSON value holds text that UTF-8 cannot encode (JSON's ``\\ud800`` escapes parse to lone
    surrogates, which no file can hold), as a phrase naming the field; None when it holds none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            what = f"field {'.'.join(map(str, path))!r}" if path else "a key"
            return (f"{what} holds text that UTF-8 cannot encode ({e.reason}: {ascii(value[e.start])} at character "
                    f"{e.start + 1})")
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if found := (_unencodable(key) if isinstance(key, str) else None) or _unencodable(item, (*path, key)):
            return found
    return None


def check_row(row, where: str) -> dict:
    """Validate one parsed row (filling ``input``/``prompt`` when absent); raise ValueError naming ``where``."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if (problem := _unencodable(row)) is not None:
        raise ValueError(f"{where}: {problem}")
    row.setdefault("input", "")
    if "prompt" not in row and isinstance(row.get("instruction"), str) and isinstance(row["input"], str):
        row["prompt"] = build_prompt(row["instruction"], row["input"])
    for name in REQUIRED_FIELDS:
        if name not in row:
            raise ValueError(f"{where}: missing field {name!r}")
    for name in ("instruction", "input", "prompt"):
        if not isinstance(row[name], str):
            raise ValueError(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")
    if not row["prompt"].strip():
        raise ValueError(f"{where}: empty prompt in field 'prompt'")
    out = row["output"]
    if not (isinstance(out, str) or (isinstance(out, list) and out and all(isinstance(o, str) for o in out))):
        raise ValueError(f"{where}: field 'output' must be a string or a non-empty list of strings")
    if not all(o.strip() for o in references(row)):
        raise ValueError(f"{where}: empty response in field 'output'")
    return row


class _NotJSON(ValueError):
    """A NaN or Infinity literal: Python's JSON reader accepts them, JSON does not."""


def _refuse_constant(name: str):
    raise _NotJSON(f"{name} is not valid JSON (standard JSON has no NaN or Infinity)")


@dataclass
class Scan:
    """One processed JSONL file read and checked (``scan_examples``): its good ``rows`` with the ``lines`` they
    stand on, the ``skipped`` malformed rows (file, line, what) and the rows that gave a key twice (``twice``:
    ``(line, key)``)."""
    path: Path
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    twice: list[tuple[int, str]] = field(default_factory=list)


def scan_examples(path: str | os.PathLike, skip_malformed: bool = False) -> Scan:
    """Read a processed JSONL file and check every row (``check_row``); a malformed row raises ValueError naming
    the file and line, unless ``skip_malformed``, in which case it is left out and its problem listed in
    ``Scan.skipped``, every one of them. A file without a single good row is an error either way (blank lines are
    ignored; a UTF-8 byte-order mark at its start is dropped)."""
    path = Path(path)
    scan = Scan(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}, line {lineno}"
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                     f"{e.start + 1})") from None
                if not line.strip():
                    continue
                keys_twice: list[str] = []

                def pairs(items: list[tuple[str, object]]) -> dict:
                    seen: set[str] = set()
                    for key, _ in items:
                        if key in seen:
                            keys_twice.append(key)
                        seen.add(key)
                    return dict(items)

                try:
                    row = json.loads(line, object_pairs_hook=pairs, parse_constant=_refuse_constant)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{where}: invalid JSON ({e.msg})") from None
                except _NotJSON as e:
                    raise ValueError(f"{where}: {e}") from None
                except RecursionError:
                    raise ValueError(f"{where}: invalid JSON (nested too deeply)") from None
                scan.rows.append(check_row(row, where))
                scan.lines.append(lineno)
                scan.twice += [(lineno, key) for key in keys_twice[:1]]
            except ValueError as problem:
                if not skip_malformed:
                    raise
                scan.skipped.append(str(problem))
    if not scan.rows:
        detail = f" ({len(scan.skipped)} malformed rows skipped, first: {scan.skipped[0]})" if scan.skipped else ""
        raise ValueError(f"{path}: no examples{detail}; expected one JSON object per line")
    return scan


def read_examples(path: str | os.PathLike, skip_malformed: bool = False) -> tuple[list[dict], list[str]]:
    """Read a processed JSONL file; return ``(rows, skipped)`` (see ``scan_examples``)."""
    scan = scan_examples(path, skip_malformed)
    return scan.rows, scan.skipped


def data_warnings(scan: Scan, split: str, limit: int | None = None) -> list[str]:
    """What is suspicious in the first ``limit`` rows (all: None) of a file read as ``split``, one line per kind,
    naming the file and the first line concerned: malformed rows left out (``skip_malformed``), rows that give a
    key twice, rows that repeat an earlier row's
    prompt and output (how many), and several references in a set other than S-NI and UnNI (training learns only
    the first; Rouge-L takes the best)."""
    rows, lines = scan.rows[:limit], scan.lines[:limit]
    last = lines[-1] if lines else 0
    out = []
    if scan.skipped:
        first = scan.skipped[0].removeprefix(f"{scan.path}, ")
        out.append(f"{scan.path}: {count(len(scan.skipped), 'malformed row')} left out (data.skip_malformed; the "
                   f"first: {first})")
    twice = [(line, key) for line, key in scan.twice if line <= last]
    if twice:
        out.append(f"{scan.path}: {count(len(twice), 'row')} with a key given twice, of which JSON keeps only the "
                   f"last value (the first: line {twice[0][0]}, key {twice[0][1]!r})")
    first_seen: dict[tuple[str, str], int] = {}
    repeats = []
    for row, line in zip(rows, lines):
        key = (row["prompt"], json.dumps(row["output"], ensure_ascii=False))
        if key in first_seen:
            repeats.append((line, first_seen[key]))
        else:
            first_seen[key] = line
    if repeats:
        out.append(f"{scan.path}: repeated rows, {len(repeats)} of {len(rows)} with the prompt and output of an "
                   f"earlier row (the first: line {repeats[0][0]}, a copy of line {repeats[0][1]})")
    if split not in MULTI_REFERENCE_SETS:
        several = [line for row, line in zip(rows, lines) if isinstance(row["output"], list) and len(row["output"]) > 1]
        if several:
            effect = ("training learns only the first reference of each" if split == "train" else
                      "Rouge-L scores each against the best of them")
            out.append(f"{scan.path}: {count(len(several), 'row')} with several references (the first: line "
                       f"{several[0]}), where only {', '.join(MULTI_REFERENCE_SETS)} have them; {effect}")
    return out
