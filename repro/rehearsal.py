"""The rehearsal: the paper's grid job for job at its real widths, vocabularies and tokenizers, with the depth cut, on
whatever machine is at hand (a CPU included), before any GPU-hour is paid.

    python -m repro.rehearsal config/paper.yaml --out results-rehearsal [--tokenizer ID=FOLDER ...] [--data DIR]
    snakemake --configfile results-rehearsal/rehearsal.yaml --directory results-rehearsal    (make rehearsal)

It writes ``<out>/rehearsal.yaml``, derived from the paper configuration with one owner per fact: every model is
built by the workflow (random weights) from its published ``architecture`` with ``layers`` cut to ``--layers``, its
real tokenizer (the model's hub id, or a local folder given with ``--tokenizer``), and stored in ``--storage-dtype``
(bf16 by default, and so are the trained checkpoints: ``training.checkpoint_dtype``, what a bf16 run saves);
the pairs, methods, divergences (or ``--divergences``), LoRA settings, fidelity options, precision and job split
(``evaluation.separate_jobs``) are the paper's. What the rehearsal cuts is only what sets the time, never a shape:
epochs, the global and micro batch, the rows of every split (``<out>/data``, the first rows of each file of the
processed layout in ``--data``), the sampled tokens, the sampling seeds and the figures' sizes. Every cut is listed in
the config's header.

It proves that every job of the paper grid runs at the paper's shapes (the tokenizers, the vocabulary-sized buffers,
the cross-vocabulary maps, LoRA on q/v, the caches, the tables and figures); it cannot prove the speed, the memory of
the full depth on a GPU, or the numerics of bf16 on a GPU (``scripts/gpu_smoke.py`` is the check for those).
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml
from huggingface_hub import hf_hub_download
from tokenizers import Tokenizer

from .io import write_text
from .sources import PROCESSED_LAYOUT
from .validation import load_config, validate_config


def _splits_source(data_dir: Path) -> dict[str, tuple[Path, int]]:
    """Where each split of the rehearsal comes from in a processed-layout folder: (file, first row). A folder without
    a training file (the released test data alone) gives the training rows from Dolly's dev file after the dev
    rows; one without UnNI reads S-NI's file for it."""
    found = {split: data_dir / rel for split, rel in PROCESSED_LAYOUT.items()}
    out = {split: (path, 0) for split, path in found.items() if path.is_file()}
    if "train" not in out and "dev" in out:
        out["train"] = (found["dev"], -1)  # after the dev rows: see make_data
    if "unni" not in out and "sni" in out:
        out["unni"] = out["sni"]
    missing = sorted(set(PROCESSED_LAYOUT) - set(out))
    if missing:
        raise FileNotFoundError(f"{data_dir}: no processed file for {missing} (expected "
                                f"{', '.join(PROCESSED_LAYOUT[s] for s in missing)})")
    return out


def make_data(data_dir: str | Path, out_dir: str | Path, rows: dict[str, int]) -> dict[str, str]:
    """Copy the first ``rows[split]`` lines of every split of the processed folder ``data_dir`` into ``out_dir`` (the
    same layout); return ``{split: where it came from}``."""
    sources, origin = _splits_source(Path(data_dir)), {}
    for split, rel in PROCESSED_LAYOUT.items():
        path, start = sources[split]
        start = rows["dev"] if start == -1 else start
        with path.open(encoding="utf-8-sig") as f:
            lines = [line for line in f if line.strip()][start:start + rows[split]]
        if len(lines) < rows[split]:
            raise ValueError(f"{path}: {len(lines)} rows from row {start}, the rehearsal asks for {rows[split]}")
        write_text(Path(out_dir) / rel, "".join(line if line.endswith("\n") else line + "\n" for line in lines))
        origin[split] = f"{path} rows {start + 1}-{start + rows[split]}"
    return origin


def _tokenizer_groups(config: dict, folders: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{model: (tokenizer key, where to load it)}``: models whose tokenizers are identical share one key (the
    same-vocabulary pairs need one), named after the architecture family of its first model."""
    vocabularies: dict[str, tuple[str, dict]] = {}
    out = {}
    for name, spec in config["models"].items():
        ref = folders.get(spec["id"], spec["id"])
        path = Path(ref) / "tokenizer.json" if Path(ref).is_dir() else hf_hub_download(ref, "tokenizer.json")
        vocab = Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
        key = next((k for k, (_, v) in vocabularies.items() if v == vocab), None)
        if key is None:
            key = spec["architecture"]["arch"] if spec["architecture"]["arch"] not in vocabularies else name
            vocabularies[key] = (ref, vocab)
        out[name] = (key, vocabularies[key][0])
    return out


def rehearsal_config(paper: dict, folders: dict[str, str], layers: int = 1, divergences: list[str] | None = None,
                     storage_dtype: str = "bfloat16", bf16_pairs: tuple[str, ...] = (), rows: dict | None = None,
                     batch_size: int = 8, micro_batch_size: int = 4, max_new_tokens: int = 16) -> dict:
    """The rehearsal's config from the paper's (see the module docstring); ``folders``: hub id -> local tokenizer
    folder where the hub is out of reach; ``bf16_pairs``: pairs trained with bf16 autocast (the rest in fp32)."""
    config = copy.deepcopy(paper)
    missing = [name for name, spec in config["models"].items() if "architecture" not in spec]
    if missing:
        raise ValueError(f"config key 'models.{missing[0]}.architecture': the rehearsal builds every model from its "
                         f"published architecture; {missing} have none")
    unknown = sorted(set(bf16_pairs) - set(config["pairs"]))
    if unknown:
        raise ValueError(f"--bf16-pair {unknown[0]!r} is not a pair of the config ({', '.join(config['pairs'])})")
    groups = _tokenizer_groups(config, folders)
    config["results_dir"] = "results"
    config["data"] = {"source": "processed", "path": "data", "skip_malformed": False}
    config["tokenizers"] = {key: {"id": str(Path(ref).resolve()) if Path(ref).is_dir() else ref}
                            for key, ref in groups.values()}
    for seed, (name, spec) in enumerate(config["models"].items()):
        published = spec["architecture"]
        config["models"][name] = {**published, "layers": min(layers, published["layers"]),
                                  "tokenizer": groups[name][0], "dtype": storage_dtype, "seed": seed}
    if divergences is not None:
        config["divergences"] = list(divergences)
    training = config["training"]
    training.update(batch_size=batch_size, micro_batch_size=min(training["micro_batch_size"], micro_batch_size),
                    precision="fp32", checkpoint_dtype=storage_dtype)
    for name, pair in config["pairs"].items():
        for role in ("teacher_training", "student_training"):
            pair[role]["epochs"] = 1
            if "micro_batch_size" in pair[role]:
                pair[role]["micro_batch_size"] = min(pair[role]["micro_batch_size"], micro_batch_size)
            if name in bf16_pairs:
                pair[role]["precision"] = "bf16"
    evaluation = config["evaluation"]
    evaluation.update(seeds=evaluation["seeds"][:1], dev_seeds=evaluation["dev_seeds"][:1],
                      max_new_tokens=max_new_tokens)
    figures = config.setdefault("figures", {})
    figures["toy"] = {"n_vectors": 8, "n_classes": 64, "steps": 10, "lr": 1.0, "repetitions": 2, "chunk": 2,
                      "seed": figures.get("toy", {}).get("seed", 10)}
    figures.setdefault("representation", {})["n_examples"] = (rows or ROWS)["train"] // 4
    return validate_config(config)


ROWS = {"train": 16, "dev": 4, "dolly": 4, "selfinst": 4, "vicuna": 4, "sni": 4, "unni": 4}


def header(paper_path: str, args: argparse.Namespace, origin: dict[str, str]) -> str:
    lines = [f"The rehearsal of {paper_path}: the paper's grid at its published widths, vocabularies and tokenizers,",
             f"the depth cut to {args.layers} layer(s), random weights and trained checkpoints stored in "
             f"{args.storage_dtype}; written by",
             "python -m repro.rehearsal (do not edit: regenerate). Cut for time, never for shape: 1 epoch, global",
             f"batch {args.batch_size} (micro batch at most {args.micro_batch_size}), {args.max_new_tokens} sampled "
             f"tokens, one sampling seed,",
             "Figure 1 at a toy size, precision fp32"
             + (f" (bf16 autocast: {', '.join(args.bf16_pair)})." if args.bf16_pair else "."), "Data:"]
    lines += [f"  {split}: {where}" for split, where in origin.items()]
    return "".join(f"# {line}\n" for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the paper configuration (config/paper.yaml)")
    parser.add_argument("--out", required=True, help="folder of the rehearsal (its config, data and results)")
    parser.add_argument("--tokenizer", action="append", default=[], metavar="ID=FOLDER",
                        help="read the tokenizer of hub id ID from FOLDER (offline); repeatable")
    parser.add_argument("--data", help="processed data folder (default: the config's data.path)")
    parser.add_argument("--layers", type=int, default=1, help="depth of every model (default 1)")
    parser.add_argument("--divergences", nargs="+", help="the KD rows' divergences (default: the config's)")
    parser.add_argument("--bf16-pair", action="append", default=[], help="a pair trained in bf16 autocast")
    parser.add_argument("--storage-dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="dtype the built base models and the trained checkpoints are saved in (default "
                        "bfloat16: half the disk)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--train-rows", type=int, default=ROWS["train"], help="training rows (default 16)")
    parser.add_argument("--eval-rows", type=int, default=ROWS["dev"], help="rows of the dev set and of each test set "
                        "(default 4)")
    args = parser.parse_args(argv)
    folders = {}
    for item in args.tokenizer:
        ref, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"--tokenizer {item!r}: expected ID=FOLDER with an existing folder")
        folders[ref] = folder
    paper = load_config(args.config)
    rows = {split: args.train_rows if split == "train" else args.eval_rows for split in ROWS}
    out = Path(args.out)
    origin = make_data(args.data or paper["data"]["path"], out / "data", rows)
    config = rehearsal_config(paper, folders, args.layers, args.divergences, args.storage_dtype,
                              tuple(args.bf16_pair), rows, args.batch_size, args.micro_batch_size,
                              args.max_new_tokens)
    write_text(out / "rehearsal.yaml", header(args.config, args, origin) + yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {out / 'rehearsal.yaml'} and {out / 'data'}")


if __name__ == "__main__":
    main()
