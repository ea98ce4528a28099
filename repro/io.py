"""Atomic file output and strict JSON/JSONL input.

Every file the harness writes goes through these helpers: the content lands in a temporary file in the same folder,
which is then renamed over the target, so an interrupted run never leaves a file that looks complete.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error remove it.

    Works for files and folders (e.g. ``save_pretrained`` targets): an existing target folder is replaced. So the
    target must be a plain name inside its folder: a path ending in ``..`` (or the root) is refused before anything
    is created or removed, since replacing it would remove a parent folder with everything in it.
    """
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise ValueError(f"{path}: not a file or folder name inside a folder (it ends in {target.name or '/'!r}, "
                         f"so replacing it would remove a parent folder); nothing was written or removed")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    inner = tmp / target.name
    try:
        yield inner
        if not inner.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {target}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(inner, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any, allow_nan: bool = True) -> None:
    """Write ``obj`` as indented JSON, atomically; ``allow_nan=False``: a NaN or infinite number is an error naming
    the file (standard JSON has neither; data files are written that way)."""
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=allow_nan)
    except ValueError as e:
        raise ValueError(f"{path}: not written: {e} (standard JSON has no NaN or Infinity)") from None
    write_text(path, text + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict], allow_nan: bool = True) -> None:
    """Write one JSON object per line, atomically; ``allow_nan=False``: a NaN or infinite number is an error
    naming the file and row (standard JSON has neither; data files are written that way)."""
    lines = []
    for i, row in enumerate(rows, 1):
        try:
            lines.append(json.dumps(row, ensure_ascii=False, allow_nan=allow_nan) + "\n")
        except ValueError as e:
            raise ValueError(f"{path}: not written: row {i}: {e} (standard JSON has no NaN or Infinity)") from None
    write_text(path, "".join(lines))


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as a file, as the end of a sentence that starts with the path ("does not
    exist", "is a folder, not a file", "is a symbolic link that loops", ...), or None when it can."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that loops (it leads, through links, back to itself)"
        if p.is_symlink():
            return f"is a symbolic link to {os.readlink(p)}, which does not exist"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file, not a folder)"
        if e.errno == errno.EACCES:
            return f"cannot be reached (no permission on a folder of its path for user id {os.getuid()})"
        return "does not exist"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file"
    if not os.access(p, os.R_OK):
        return f"cannot be read (no read permission for user id {os.getuid()})"
    return None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a parse error names the file and position."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def read_csv(path: str | os.PathLike) -> list[dict]:
    """The rows of a CSV file with a header line, as dicts of text (an empty cell is "")."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of objects; a bad line raises an error naming the file and line number.

    Blank lines are an error too (not skipped), so that no record is silently lost.
    """
    p = Path(path)
    rows = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}, line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{p}, line {lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def failure_cause(log_text: str) -> str | None:
    """The cause of a failed notebook run from papermill's log: the last line of the form ``SomeError: message``
    (the exception the failing cell raised, after papermill's own traceback), or None when there is none."""
    causes = [line.strip() for line in log_text.splitlines()
              if re.match(r"^\s*[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*:", line)
              and not line.lstrip().startswith("papermill.exceptions.")]
    return causes[-1] if causes else None

