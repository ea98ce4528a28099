"""The scripts run: the GPU smoke script (tiny shapes on the CPU) and the toy-simulation timing."""
import subprocess
import sys

from conftest import REPO
from repro.io import read_json


def test_gpu_smoke_script_runs_kd_and_dskd_at_tiny_shapes(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_smoke.py"), "--tiny", "--steps", "2",
                           "--warmup", "1", "--seq-len", "32", "--micro-batch", "2", "--bf16-on-cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "kd " in done.stdout and "dskd" in done.stdout and "tokens/s" in done.stdout
    results = {r["method"]: r for r in read_json(out)["results"]}
    assert set(results) == {"kd", "dskd"}
    assert results["dskd"]["projector_parameters"] > 0 == results["kd"]["projector_parameters"]
    assert all(r["tokens_per_s"] > 0 and len(r["losses"]) == 2 for r in results.values())


def test_toy_timing_script_measures_every_divergence(tmp_path):
    out = tmp_path / "toy.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "time_toy.py"), str(REPO / "config" / "micro.yaml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = read_json(out)
    assert set(result["seconds_per_repetition"]) == {"kl"} and result["sizes"]["n_classes"] == 50
    assert result["extrapolated_seconds"] == result["seconds_per_repetition"]["kl"] * 2  # micro: 2 repetitions
    assert "extrapolated to 2 repetitions" in done.stdout


def test_cma_statistics_timing_script(tmp_path, trained_tokenizers, small_splits):
    from repro.io import write_jsonl
    from repro.models import init_model
    from repro.vocab import load_tokenizer

    init_model({"arch": "qwen2", "layers": 1, "hidden": 32, "heads": 2, "max_positions": 128, "dropout": 0.0,
                "pad_vocab_to_multiple_of": 64}, load_tokenizer(trained_tokenizers["qwen"]), tmp_path / "teacher",
               seed=1)
    write_jsonl(tmp_path / "train.jsonl", small_splits["train"][:6])
    out = tmp_path / "cma.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "time_cma_statistics.py"), "--teacher",
                           str(tmp_path / "teacher"), "--student", str(trained_tokenizers["gpt2"]), "--train",
                           str(tmp_path / "train.jsonl"), "--max-length", "128", "--max-prompt-length", "64",
                           "--micro-batch", "2", "--repeats", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = read_json(out)
    assert result["examples"] == 6 and set(result["ratio_to_epoch"]) == {"official", "response"}
    assert all(v > 0 for v in result["median"].values())
    assert "statistics 'official'" in done.stdout
