"""The exact teacher-state cache: the frozen teacher run once over the training set, read by every white-box cell.

The teacher of a pair is frozen (eval mode, dropout off), so its outputs on a training example never change; every
KD, DSKD, DSKD-CMA, ULD and MinED cell of the pair would otherwise recompute them in every epoch. What every method
needs is the teacher's final hidden state (after the final norm) at the response positions of each example: the
logits are one product with the frozen head away, and DSKD-CMA reads nothing else at other positions (its
attention gives them weight exactly 0). So the cache stores, per example, those rows in the teacher's own dtype
(``hidden`` [rows, d_t] with ``offsets`` [n+1]), and DSKD-CMA's per-example statistics
(``repro.methods.cma_example_sums``) for the normalisation the cells use.

A cache is valid for exactly one (teacher checkpoint, training data, teacher tokenisation, max_length,
max_prompt_length, precision): its ``fingerprint`` hashes the checkpoint's files, the data file, the tokenizer and
those settings, and ``load`` refuses a cache whose fingerprint differs from the one the caller computes, naming
what differs. The workflow builds one per pair (rule ``cache_teacher``) and hands it to the pair's cells.

    python -m repro.teacher_states --teacher DIR --data train.jsonl --out states.pt [--cma official]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import layout, memory
from .data import IGNORE, Encoded, collate, encode_dataset, load_examples
from .device import make_accelerator
from .io import atomic_path, write_json
from .methods import cma_example_sums, final_hidden
from .models import load_model
from .settings import TrainSettings
from .vocab import load_tokenizer

FORMAT = 2  # 2: a file set's hash is over each file's own sha256 (which a memo can keep), 1 over their bytes


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_memo_file(folder: str | os.PathLike) -> Path:
    """The sidecar that memoises the sha256 of a checkpoint folder's files, ``.{folder name}.sha256.json`` beside
    the folder (not in it: the folder's files stay the checkpoint's own)."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.sha256.json"


def _read_memo(path: Path) -> dict:
    """A memo's entries, ``{file name: {"stat": [size, mtime_ns, ctime_ns, inode], "sha256": hex}}``; a missing,
    unreadable or malformed memo is an empty one (it is rebuilt, never trusted)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
        if all(isinstance(e["stat"], list) and isinstance(e["sha256"], str) for e in entries.values()):
            return entries
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return {}


def _hash_files(paths: list[Path], memo_file: Path | None = None) -> str:
    """One sha256 over the files' names and their own sha256s, in path order. With ``memo_file``, a file whose size,
    mtime, ctime and inode equal those the memo recorded with its hash is not read again (an in-place change that
    restores the mtime still moves the ctime); hashes computed anew are written back to the memo, atomically."""
    memo = _read_memo(memo_file) if memo_file is not None else {}
    entries = {}
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()  # before reading: a change while the file is hashed makes the next stat differ
        key = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        entry = memo.get(path.name)
        if entry is None or entry["stat"] != key:
            entry = {"stat": key, "sha256": file_sha256(path)}
        entries[path.name] = entry
        digest.update(path.name.encode())
        digest.update(entry["sha256"].encode())
    if memo_file is not None and entries != memo:
        try:
            write_json(memo_file, {"files": entries})
        except OSError:  # a read-only checkpoint's parent: hash again next time
            pass
    return digest.hexdigest()


def fingerprint(teacher_dir: str | os.PathLike, data_file: str | os.PathLike, max_length: int,
                max_prompt_length: int, dtype: str) -> dict:
    """What a cache depends on: hashes of the teacher checkpoint folder's files (weights, config, tokenizer) and
    of the training data, the tokenisation lengths, the teacher's dtype and the cache format.

    Each checkpoint file's sha256 is memoised (``hash_memo_file``): the cache build reads the teacher's weights
    once, and every white-box cell of the pair after it only stats them (tens of GB at the paper's scale)."""
    folder = Path(teacher_dir)
    files = [p for p in folder.iterdir() if p.is_file()]
    if not files:
        raise ValueError(f"{folder}: no teacher checkpoint files to build a teacher-state cache from")
    return {"format": FORMAT, "teacher": _hash_files(files, hash_memo_file(folder)),
            "data": _hash_files([Path(data_file)]), "max_length": max_length,
            "max_prompt_length": max_prompt_length, "dtype": dtype}


@dataclass
class TeacherStates:
    """Cached teacher states of one training set (see the module docstring)."""
    hidden: torch.Tensor  # [rows, d_t]: response positions of every example, examples in training-set order
    offsets: torch.Tensor  # [n + 1]: rows of example i are hidden[offsets[i]:offsets[i+1]]
    fingerprint: dict
    cma_sums: dict[str, torch.Tensor] = field(default_factory=dict)  # normalisation -> [n, 3, 3]
    seconds: float = 0.0

    def rows(self, indices: list[int]) -> torch.Tensor:
        """The rows [sum of the examples' response positions, d_t] of the examples ``indices``, in that order."""
        return torch.cat([self.hidden[self.offsets[i]:self.offsets[i + 1]] for i in indices])

    @property
    def examples(self) -> int:
        return len(self.offsets) - 1

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            torch.save({"hidden": self.hidden, "offsets": self.offsets, "fingerprint": self.fingerprint,
                        "cma_sums": self.cma_sums, "seconds": self.seconds}, tmp)


def load(path: str | os.PathLike, expected: dict | None = None) -> TeacherStates:
    """Read a cache; with ``expected`` (a ``fingerprint``), refuse one built from another teacher, data,
    tokenisation or precision, naming what differs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no teacher-state cache (build it with python -m repro.teacher_states, "
                                f"or set training.teacher_cache: false)")
    # memory-mapped: a cell reads the rows of its batches, not the whole file (tens of GB at the paper's scale), and
    # the processes of one machine share the pages
    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if expected is not None and state["fingerprint"] != expected:
        differ = sorted(k for k in set(expected) | set(state["fingerprint"])
                        if expected.get(k) != state["fingerprint"].get(k))
        raise ValueError(f"{path}: this teacher-state cache was built for another {', '.join(differ)} than this "
                         f"cell's; rebuild it (the workflow does when its inputs change)")
    return TeacherStates(state["hidden"], state["offsets"], state["fingerprint"], state["cma_sums"],
                         state.get("seconds", 0.0))


def build(teacher, encoded: list, pad_id: int, fingerprint_: dict, cma: tuple[str, ...] = (),
          max_length: int = 512, batch_size: int = 8) -> TeacherStates:
    """Run ``teacher`` once over ``encoded`` (each example's teacher-side ``Encoded``: ``input_ids``, ``labels``)
    and keep its final hidden states at the response positions; with ``cma``, also DSKD-CMA's per-example sums
    for those normalisations. Examples are batched by length (each is computed independently of its batch)."""
    started = time.perf_counter()
    device = teacher.get_input_embeddings().weight.device
    rows: list[torch.Tensor | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collate([Encoded(encoded[i].input_ids, encoded[i].labels) for i in chunk], pad_id)
            hidden = final_hidden(teacher, {k: v.to(device) for k, v in batch.items()})
            for k, i in enumerate(chunk):
                rows[i] = hidden[k][batch["labels"][k].to(device) != IGNORE].cpu()
    counts = torch.tensor([0] + [r.shape[0] for r in rows])
    states = TeacherStates(torch.cat(rows), counts.cumsum(0), fingerprint_)
    wrapped = [Encoded([], [], teacher=e) for e in encoded]
    for normalisation in cma:
        states.cma_sums[normalisation] = cma_example_sums(teacher, wrapped, pad_id, normalisation, max_length,
                                                          batch_size)
    states.seconds = time.perf_counter() - started
    return states


def teacher_side(encoded: list) -> list:
    """The teacher-side encodings of an encoded training set: ``Encoded.teacher`` for cross-vocabulary batches,
    else the examples themselves (teacher and student share the tokenisation)."""
    return [e.teacher if e.teacher is not None else e for e in encoded]


def check_matches(states: TeacherStates, encoded: list, path: str) -> None:
    """Refuse a cache whose per-example response counts differ from this training set's teacher side."""
    side = teacher_side(encoded)
    if states.examples != len(side):
        raise ValueError(f"{path}: the teacher-state cache holds {states.examples} examples, the training set "
                         f"{len(side)}")
    counts = (states.offsets[1:] - states.offsets[:-1]).tolist()
    for i, (count, e) in enumerate(zip(counts, side)):
        if count != sum(label != IGNORE for label in e.labels):
            raise ValueError(f"{path}: example {i} has {count} cached response positions but "
                             f"{sum(label != IGNORE for label in e.labels)} in this tokenisation")


def main(argv: list[str] | None = None) -> None:
    """Build a pair's cache: load the teacher as a training job does, tokenise the training set with the teacher's
    tokenizer, run it once, save atomically, and log size and time."""
    parser = argparse.ArgumentParser(prog="python -m repro.teacher_states", description=main.__doc__)
    parser.add_argument("--teacher", required=True, help="teacher checkpoint folder (save_pretrained)")
    parser.add_argument("--data", required=True, help="training set (processed JSONL)")
    parser.add_argument("--out", required=True, help="cache file to write")
    parser.add_argument("--training", default="{}", help="the cells' training settings as JSON (max_length, "
                        "max_prompt_length, precision, cma_normalisation, ...)")
    parser.add_argument("--cma", action="store_true", help="also DSKD-CMA's statistics")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    measure = memory.start_measure()  # the job's memory, recorded in states.json (repro.memory)
    training = json.loads(args.training)
    settings = TrainSettings(**{"lr": 1.0, "epochs": 1, **training})
    accelerator = make_accelerator(settings)
    dtype = settings.frozen_dtype(accelerator.device.type == "cuda")
    tokenizer = load_tokenizer(args.teacher)
    teacher = load_model(args.teacher, dtype).to(accelerator.device).eval()
    encoded = encode_dataset(load_examples(args.data), tokenizer, settings.max_length, settings.max_prompt_length)
    expected = fingerprint(args.teacher, args.data, settings.max_length, settings.max_prompt_length, dtype)
    with accelerator.autocast():
        states = build(teacher, encoded, tokenizer.pad_token_id, expected,
                       (settings.cma_normalisation,) if args.cma else (), settings.max_length,
                       settings.micro_batch_size)
    states.save(args.out)
    size = os.path.getsize(args.out)
    info = {"file": args.out, "examples": states.examples, "rows": int(states.hidden.shape[0]),
            "width": int(states.hidden.shape[1]), "dtype": str(states.hidden.dtype), "bytes": size,
            "seconds": round(states.seconds, 2), "cma": sorted(states.cma_sums), "fingerprint": expected}
    info["memory"] = memory.finish_measure(measure, torch.cuda.max_memory_allocated()
                                           if torch.cuda.is_available() else None)
    write_json(layout.teacher_states_info(args.out), info)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
