"""Pretraining of the miniature base models: the corpus is disjoint from the task's data, next-token training
lowers the loss deterministically, and the workflow plans it (and starts every row from the pretrained bases)."""
import re

import pytest

from conftest import REPO, SMALL_SIZES
from repro import grid
from repro.synthetic import generate, invent_world, pretraining_corpus
from repro.validation import load_config


def test_corpus_is_disjoint_from_the_task_data():
    texts, report = pretraining_corpus(SMALL_SIZES["seed"], SMALL_SIZES["n_people"], SMALL_SIZES["n_train"],
                                       SMALL_SIZES["n_dev"], SMALL_SIZES["n_test"], worlds=3, world_seed=500)
    assert report["kept"] == len(texts) > 3 * SMALL_SIZES["n_train"]
    assert report["kept"] + report["names"] + report["prompts"] == 3 * sum(
        len(rows) for rows in generate(**SMALL_SIZES).values())
    main = generate(**SMALL_SIZES)
    people, strangers = invent_world(SMALL_SIZES["seed"], SMALL_SIZES["n_people"])
    names = {p.name for p in people + strangers} | {p.city for p in people + strangers}
    prompts = {r["prompt"] for rows in main.values() for r in rows}
    held = {(r["prompt"], r["output"] if isinstance(r["output"], str) else r["output"][0])
            for split, rows in main.items() if split != "train" for r in rows}
    for t in texts:
        assert not names.intersection(re.findall(r"[A-Z][a-z]+", t["text"])), t["text"]
        assert not any(t["text"].startswith(p) for p in prompts)
        assert all(t["text"] != p + o for p, o in held)  # no dev or test example, prompt and answer, verbatim
    assert {t["world"] for t in texts} == {500, 501, 502}
    assert {t["family"] for t in texts} >= {"fact", "profile", "arithmetic", "spelling", "passage", "numbers"}
    with pytest.raises(ValueError, match="include the task's own data seed 3"):
        pretraining_corpus(3, 12, 240, 12, SMALL_SIZES["n_test"], worlds=2, world_seed=2)


def test_pretraining_lowers_the_loss_and_is_deterministic(tmp_path, trained_tokenizers):
    import torch

    from repro.io import read_json, write_jsonl
    from repro.models import init_model, load_model
    from repro.pretrain import pretrain_base
    from repro.settings import PretrainSettings
    from repro.vocab import load_tokenizer

    texts, _ = pretraining_corpus(SMALL_SIZES["seed"], SMALL_SIZES["n_people"], SMALL_SIZES["n_train"],
                                  SMALL_SIZES["n_dev"], SMALL_SIZES["n_test"], worlds=1, world_seed=500)
    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, texts[:96])
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    init_model({"arch": "gpt2", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 256, "dropout": 0.0}, tok,
               tmp_path / "base", seed=0)
    settings = PretrainSettings(epochs=3, lr=5e-3, batch_size=16, max_length=128, seed=1)
    summary = pretrain_base(tmp_path / "base", corpus, tmp_path / "a", settings, log_every=3)
    pretrain_base(tmp_path / "base", corpus, tmp_path / "b", settings)
    assert summary["steps"] == 3 * 6 and summary["texts"] == 96 and summary["tokens"] > 96
    losses = [r["loss"] for r in summary["log"]]
    assert losses[-1] < losses[0] - 0.5
    assert read_json(tmp_path / "a" / "pretrain_summary.json")["steps"] == 18
    a, b, base = (load_model(tmp_path / n).state_dict() for n in ("a", "b", "base"))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], base[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").exists()
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"txt": "no"}])
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: expected a non-empty string under 'text'"):
        pretrain_base(tmp_path / "base", tmp_path / "bad.jsonl", tmp_path / "c", settings)
    with pytest.raises(ValueError, match="config key .pretraining.epochs.: 0 is less than the minimum of 1"):
        PretrainSettings(epochs=0)


def test_rows_start_from_the_pretrained_bases_when_enabled():
    config = load_config(REPO / "config" / "config.yaml")
    run = grid.find_run(config, "gpt2", "kd-kl", 10)
    config["pretraining"] = {"enabled": False}
    assert grid.cell_params(config, run)["model"].endswith("models/base/gpt2_student")
    config["pretraining"] = {"enabled": True, "worlds": 2}
    assert grid.cell_params(config, run)["model"].endswith("models/pretrained/gpt2_student")
    teacher = grid.find_run(config, "gpt2", "teacher", 10)
    assert grid.cell_params(config, teacher)["model"].endswith("models/pretrained/gpt2_teacher")
    config["pretraining"]["enabled"] = False
    assert grid.pretraining(config) is None
