"""The preparation step of the workflow: data (synthetic, processed files or hub Dolly), the miniature tokenizers,
and the randomly initialised base models of the miniature configuration."""
from __future__ import annotations

from . import grid
from .data import load_examples
from .io import atomic_path, write_json, write_jsonl, write_text
from .models import init_model
from .sources import import_real_data
from .synthetic import generate, pretraining_corpus, write_splits
from .vocab import corpus_texts, load_tokenizer, train_tokenizer


def make_data(config: dict) -> dict:
    """Write every split into the config's data folder (``data.source``: ``synthetic`` generates the project's
    data; ``processed`` and ``hub`` import the paper's, see ``repro.sources``); return ``{split: n_rows}``."""
    d = config["data"]
    if d["source"] != "synthetic":
        report = import_real_data(config)
        return {split: r["rows"] for split, r in report.items() if "rows" in r} | (
            {split: report["hub"][f"{split}_rows"] for split in ("train", "dev", "dolly")} if "hub" in report else {})
    splits = generate(d["seed"], d["n_people"], d["n_train"], d["n_dev"], d["n_test"])
    write_splits(splits, grid.data_dir(config))
    return {name: len(rows) for name, rows in splits.items()}


def train_tokenizers(config: dict) -> dict:
    """Make every tokenizer of the config: train a miniature one on the training split, or copy a real one (``id``:
    hub id or local folder) into the run's folder; return ``{name: vocabulary size}``."""
    rows = load_examples(grid.data_dir(config) / "train.jsonl")
    sizes = {}
    for name, spec in config["tokenizers"].items():
        out = grid.tokenizer_dir(config, name)
        if "id" in spec:
            real = load_tokenizer(spec["id"])
            with atomic_path(out) as tmp:
                real.save_pretrained(tmp)
        else:
            train_tokenizer(spec["kind"], spec["vocab_size"], corpus_texts(rows), out,
                            split_digits=spec.get("split_digits", False))
        sizes[name] = len(load_tokenizer(out))
    return sizes


def init_models(config: dict) -> dict:
    """Build and save every architecture-config model (random init); return ``{name: parameter count}``."""
    counts = {}
    for name in grid.built_models(config):
        spec = config["models"][name]
        tokenizer = load_tokenizer(grid.tokenizer_dir(config, spec["tokenizer"]))
        out = grid.base_model_dir(config, name)
        counts[name] = init_model(spec, tokenizer, out, seed=spec.get("seed", 0))
    return counts


def make_pretraining_corpus(config: dict, log: str | None = None) -> dict:
    """Write the pretraining corpus of the base models (``pretraining.worlds`` other seeded worlds of the synthetic
    generator, ``repro.synthetic.pretraining_corpus``) and its report; return the report."""
    d, p = config["data"], config["pretraining"]
    if d["source"] != "synthetic":
        raise ValueError(f"pretraining: the corpus comes from the synthetic generator, so it needs data.source "
                         f"'synthetic' (got {d['source']!r}); use pretrained hub models (models.<name>.id) instead")
    texts, report = pretraining_corpus(d["seed"], d["n_people"], d["n_train"], d["n_dev"], d["n_test"],
                                       p.get("worlds", 8), p.get("world_seed", 1001))
    path = grid.pretraining_corpus_file(config)
    write_jsonl(path, texts)
    write_json(path.with_suffix(".report.json"), report)
    if log:
        write_text(log, f"wrote {path}: {report}\n")
    return report
