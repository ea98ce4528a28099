"""The rehearsal: config/paper.yaml job for job at its published widths, vocabularies and real tokenizers, the depth
cut (repro.rehearsal, make rehearsal). The fast tests check the generated config against the paper's; the slow one
runs every job kind of it through the workflow."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, SHARED
from repro import grid, memory, rehearsal
from repro.config import vocabulary_problems
from repro.models import is_adapter
from repro.schema import ConfigError
from repro.validation import load_config, validate_config

TOKENIZERS = SHARED / "tokenizers"
DATA = SHARED / "data" / "minillm"
needs_shared = pytest.mark.skipif(not (TOKENIZERS / "gpt2").is_dir() or not DATA.is_dir(),
                                  reason="needs ../shared/tokenizers and ../shared/data (the workplace's offline "
                                         "copies of the paper's tokenizers and processed data)")


def make_config(out, *extra):
    """The rehearsal config as `make rehearsal-config` writes it (the Makefile owns the offline tokenizer map)."""
    subprocess.run(["make", "-s", "rehearsal-config", f"REHEARSAL={out}", f"SHARED={SHARED}",
                    f"REHEARSAL_EXTRA={' '.join(extra)}"], cwd=REPO, check=True, capture_output=True, text=True)
    return load_config(out / "rehearsal.yaml")


@needs_shared
def test_the_rehearsal_is_the_paper_grid_at_the_published_shapes(tmp_path):
    paper = load_config(REPO / "config" / "paper.yaml")
    config = make_config(tmp_path, "--bf16-pair", "llama", "--layers", "2")
    # the same grid: pairs, rows, divergences, LoRA, fidelity options, job split
    assert [(c.pair, c.name) for c in grid.cells(config)] == [(c.pair, c.name) for c in grid.cells(paper)]
    assert config["pairs"].keys() == paper["pairs"].keys()
    for name, pair in config["pairs"].items():
        for role in ("teacher_training", "student_training"):
            assert pair[role].get("lora") == paper["pairs"][name][role].get("lora")
            assert pair[role]["lr"] == paper["pairs"][name][role]["lr"]
            assert pair[role].get("precision") == ("bf16" if name == "llama" else None)
    for key in ("max_length", "max_prompt_length", "kd_rate", "kd_temperature", "teacher_cache", "cma_normalisation",
                "mined_alignment", "mined_target", "mined_vocab_map", "teacher_padded_rows", "dskd_s2t_divergence"):
        assert config["training"][key] == paper["training"][key], key
    assert config["training"]["precision"] == "fp32" and config["training"]["checkpoint_dtype"] == "bfloat16"
    assert grid.separate_evaluation(config) and grid.teacher_state_pairs(config).keys() == \
        grid.teacher_state_pairs(paper).keys()
    # every model at its published width and vocabulary, the depth cut, a real tokenizer copied into the run
    for name, spec in config["models"].items():
        published = paper["models"][name]["architecture"]
        assert {k: v for k, v in spec.items() if k in published and k != "layers"} == \
            {k: v for k, v in published.items() if k != "layers"}
        assert spec["layers"] == 2 and spec["dtype"] == "bfloat16"
        assert "id" in config["tokenizers"][spec["tokenizer"]]
    tokenizer_of = {name: spec["tokenizer"] for name, spec in config["models"].items()}
    assert tokenizer_of["gpt2_teacher"] == tokenizer_of["gpt2_student"]  # identical vocabularies share one key
    assert tokenizer_of["llama2_teacher"] == tokenizer_of["tinyllama_student"]
    assert len(set(tokenizer_of.values())) == 4
    assert vocabulary_problems(config) == []
    # real rows in the processed layout, every split present
    assert sum(1 for _ in open(tmp_path / "data" / "dolly" / "train.jsonl")) == rehearsal.ROWS["train"]
    header = (tmp_path / "rehearsal.yaml").read_text().split("results_dir")[0]
    assert "Cut for time, never for shape" in header and "unni:" in header


@needs_shared
def test_a_tokenizer_that_does_not_fit_its_model_is_named_before_any_job(tmp_path):
    config = make_config(tmp_path)
    config["models"]["gpt2_student"]["vocab_size"] = 32000  # GPT-2's 50,257 ids cannot fit
    assert vocabulary_problems(config) == ["config key 'models.gpt2_student.vocab_size': 32000 embedding rows are "
                                           "fewer than the 50257 token ids of tokenizer 'gpt2'"]


def test_a_model_without_a_published_architecture_or_an_unknown_pair_is_refused():
    paper = load_config(REPO / "config" / "paper.yaml")
    with pytest.raises(ValueError, match="--bf16-pair 'nope' is not a pair"):
        rehearsal.rehearsal_config(paper, {}, bf16_pairs=("nope",))
    del paper["models"]["gpt2_student"]["architecture"]
    with pytest.raises(ValueError, match=r"models.gpt2_student.architecture': the rehearsal builds every model"):
        rehearsal.rehearsal_config(paper, {})


def test_an_architecture_that_cannot_be_built_is_named_by_the_config_check():
    paper = load_config(REPO / "config" / "paper.yaml")
    paper["models"]["qwen_teacher"]["architecture"]["kv_heads"] = 5
    with pytest.raises(ConfigError, match=r"models.qwen_teacher.architecture.kv_heads': 5 key/value heads must "
                                          r"divide the attention heads \(16\)"):
        validate_config(paper)


@pytest.mark.slow
@needs_shared
def test_every_job_kind_of_the_paper_grid_runs_at_its_real_shapes(tmp_path):
    """The rehearsal through the workflow, every job kind of config/paper.yaml at its published widths, vocabularies
    and tokenizers with one layer: the four teachers (full SFT of GPT2-1.5B and Qwen1.5-1.8B, LoRA q/v of
    LLaMA2-7B and Mistral-7B, merged), the four teacher-state caches, every row of every pair with the divergences
    kl and akl (Table 3's row, SeqKD, MinED, ULD, DSKD-CMA included), the separate evaluation jobs, Tables 1-3,
    the claims, Figures 1 and 3 and the report; the llama pair in bf16 autocast, the rest in fp32."""
    out = tmp_path / "rehearsal"
    config = make_config(out, "--divergences", "kl", "akl", "--bf16-pair", "llama", "--train-rows", "8",
                         "--eval-rows", "2", "--max-new-tokens", "8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                           "--configfile", str(out / "rehearsal.yaml"), "--directory", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    check_rehearsal_outputs(out, config)
    check_rehearsal_memory(out)


def check_rehearsal_memory(out):
    """Every job of a finished rehearsal that records its memory (the caches, the trainings, the evaluations) grew
    its resident memory within 15% (plus the allocator's slack) of ``repro.memory``'s CPU prediction for the same
    models, batches and settings (scripts/memory_check.py --rehearsal), each with glibc's mmap threshold fixed."""
    sys.path.insert(0, str(REPO / "scripts"))
    from memory_check import rehearsal_records, within

    records = rehearsal_records(out / "rehearsal.yaml")
    assert len(records) == 4 + 2 * len(grid.runs(load_config(out / "rehearsal.yaml")))
    off = {r["job"]: f"measured {r['measured'] / 1e6:.0f} MB, predicted {r['prediction'].total / 1e6:.0f} MB "
                     f"({r['prediction'].phase})" for r in records
           if not within(r["measured"], r["prediction"].total, r["prediction"].mapped)}
    assert not off, off
    assert {r["record"]["mmap_threshold"] for r in records} == {memory.MMAP_THRESHOLD}


def check_rehearsal_outputs(out, config):
    """What a finished rehearsal in ``out`` (its workflow directory) must hold; the paths the grid names are
    relative to that directory."""
    results = out / "results"
    kinds = {p.relative_to(results / "benchmarks").parts[0] for p in (results / "benchmarks").rglob("*.tsv")}
    assert {"prepare_data", "train_cell", "evaluate_cell", "cache_teacher", "make_tables", "make_figure1",
            "make_figure3"} <= {k.removesuffix(".tsv") for k in kinds}  # the rules that record a benchmark
    assert (results / "tables" / "claims.csv").is_file() and (results / "figures" / "claims.png").is_file()
    runs = grid.runs(config)
    assert len(runs) == 26
    for run in runs:
        summary = json.loads((out / grid.run_dir(config, run) / "train_summary.json").read_text())
        scores = json.loads((out / grid.run_dir(config, run) / "scores.json").read_text())
        assert scores["cell"] == run.run_id and all(0 <= s["mean"] <= 100 for s in scores["test_sets"].values())
        assert summary["batching"]["mixed_precision"] == ("bf16" if run.pair == "llama" else "no"), run.run_id
        assert not (out / grid.run_dir(config, run) / "resume").exists()
        # a LoRA student's model is its adapter alone (its readers merge it into the base on loading)
        lora_student = run.role == "student" and "lora" in grid.cell_training(config, run)
        assert is_adapter(out / grid.run_dir(config, run) / "model") == lora_student, run.run_id
        teacher = config["models"][config["pairs"][run.pair]["teacher"]]
        if grid.uses_teacher_states(config, run):  # the head alone, with the input embeddings for DSKD-CMA
            rows = teacher["vocab_size"] * teacher["hidden"]
            assert summary["teacher_parameters"] == rows * (2 if run.method == "dskd_cma" else 1), run.run_id
    # every trained model but a LoRA student's adapter saved in the checkpoint dtype (bf16: half the disk), the
    # full fine-tunes' best checkpoints and the merged LoRA teachers alike
    for run in runs:
        model = out / grid.run_dir(config, run) / "model"
        if not is_adapter(model):
            assert {t.dtype for t in load_file(model / "model.safetensors").values()} == {torch.bfloat16}, run.run_id
            assert json.loads((model / "config.json").read_text())["dtype"] == "bfloat16", run.run_id
    for table in (1, 2, 3):
        assert (results / "tables" / f"table{table}.md").read_text().count("\n") > 3
    assert (results / "report" / "index.html").is_file()
    # the base models and the trained checkpoints at the real widths dominate (docs/paper-scale.md, "The rehearsal")
    assert sum(f.stat().st_size for f in results.rglob("*") if f.is_file()) < 10e9
