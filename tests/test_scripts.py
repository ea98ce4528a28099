"""The scripts run: the GPU device check (tiny shapes on the CPU) and the toy-simulation timing."""
import math
import os
import subprocess
import sys

from conftest import REPO
from repro.io import read_json

SMOKE = REPO / "scripts" / "gpu_smoke.py"
SMOKE_RUNS = {(pair, method, cached) for pair in ("llama", "gpt2") for method in ("kd", "dskd", "dskd_cma")
              for cached in (True, False)}


def test_gpu_smoke_script_runs_every_pair_method_and_cache_at_tiny_shapes(tmp_path):
    """The device check at tiny shapes on the CPU: all twelve (pair, method, cached) runs, most informative first,
    one line each, finite losses; each run's memory prediction describes the job that ran (the teacher parts or the
    whole teacher it held in bf16, the LoRA student's bf16 base and fp32 adapters, the projectors)."""
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(SMOKE), "--tiny", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = read_json(out)
    assert report["complete"] and report["skipped"] == [] and report["device"] == "cpu"
    # the host's resident memory around the device's first operation (on a GPU: the CUDA runtime's host side)
    assert 0 < report["host_rss"]["after_imports"] <= report["host_rss"]["after_device_init"]
    runs = report["runs"]
    keys = [(r["pair"], r["method"], r["cached"]) for r in runs]
    assert set(keys) == SMOKE_RUNS and len(keys) == 12
    assert keys[:3] == [("llama", "dskd", True), ("llama", "kd", True), ("gpt2", "dskd", True)]
    lines = [line for line in done.stdout.splitlines() if "tokens/s" in line]
    assert len(lines) == 12 and all("predicted" in line and "MFU" in line for line in lines)
    assert report["pairs"]["llama"]["settings"]["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert report["pairs"]["gpt2"]["settings"]["lora"] is None
    for r in runs:
        assert r["tokens_per_s"] > 0 and len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"]), r
        assert r["peak_bytes"] is None and r["mfu"] is None and r["predicted_bytes"] > 0
        assert r["accumulation"] == 4 and r["prompt_len"] == r["seq_len"] // 2  # the paper's 32 = 4 x 8; half prompt
        teacher = report["pairs"][r["pair"]]["architecture"]["teacher"]
        head = teacher["vocab_size"] * teacher["hidden"]
        parts = r["predicted_components"]
        if r["cached"]:  # the head alone; DSKD-CMA also the input embeddings, which GPT-2 ties to the head
            untied_embeddings = r["method"] == "dskd_cma" and r["pair"] == "llama"
            assert r["teacher_parameters_held"] == head * (2 if untied_embeddings else 1)
            assert parts["teacher head"] == 2 * r["teacher_parameters_held"] and "teacher" not in parts
        else:
            assert parts["teacher"] == 2 * r["teacher_parameters_held"] > 4 * head and "teacher head" not in parts
        assert (r["projector_parameters"] > 0) == (r["method"] != "kd")
        adapters = r["trained_parameters"] - r["projector_parameters"]
        if r["pair"] == "llama":  # LoRA: the frozen base in bf16, the adapters in fp32
            assert 0 < adapters < r["student_parameters"] / 10
            assert parts["student weights"] == 2 * (r["student_parameters"] - adapters) + 4 * adapters
        else:
            assert adapters == r["student_parameters"] and parts["student weights"] == 4 * adapters
    assert all(r["correct_share"] is not None for r in runs if r["method"] == "dskd_cma")


def test_gpu_smoke_script_keeps_to_its_budget_and_writes_what_ran(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(SMOKE), "--tiny", "--max-minutes", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = read_json(out)
    assert report["complete"] and report["runs"] == []
    assert {(s["pair"], s["method"], s["cached"]) for s in report["skipped"]} == SMOKE_RUNS
    assert done.stdout.count("skipped: --max-minutes 0 spent") == 12


def test_gpu_smoke_script_refuses_paper_shapes_without_a_gpu(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SMOKE), "--out", str(tmp_path / "smoke.json")], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 2 and not (tmp_path / "smoke.json").exists()
    assert done.stderr.strip() == ("gpu_smoke.py: the paper's shapes need a GPU (none is visible); --tiny checks the "
                                   "script on a CPU")


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


def test_readme_results_script_quotes_the_tables(tmp_path):
    import csv

    columns = ["table", "pair", "row", "method", "divergence", "status", "avg"]
    rows = {1: [(1, "gpt2", "Teacher (SFT)", "sft", "", "done", 40.123), (1, "gpt2", "SFT", "sft", "", "done", 25.5),
                (1, "gpt2", "KD (KL)", "kd", "kl", "done", 27.804), (1, "gpt2", "KD w/ DSKD (KL)", "dskd", "kl",
                                                                    "missing", ""),
                (1, "qwen_gpt2", "MinED", "mined", "", "done", 23.71),
                (1, "qwen_gpt2", "DSKD-CMA (KL)", "dskd_cma", "kl", "done", 18.74),
                (1, "qwen_gpt2", "DSKD-CMA (JS)", "dskd_cma", "js", "done", 19.33)],
            3: [(3, "gpt2", "Different spaces (KD) (KL)", "kd", "kl", "done", 27.804),
                (3, "gpt2", "Student space only (KL)", "dskd_student_space", "kl", "done", 22.07)]}
    for table, values in rows.items():
        with (tmp_path / f"table{table}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(values)
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_results.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| KD | 27.80 |" in out and "| KD w/ DSKD | missing |" in out
    assert "| Student space only (Table 3) | 22.07 |" in out
    assert "gpt2: Teacher (SFT) 40.12, SFT 25.50" in out
    assert "MinED 23.71, DSKD-CMA 18.74-19.33 (KL lowest, JS highest)" in out
    # with the columns of a run with training seeds: mean ± std over runs, DSKD - KD with its interval, the claims
    with (tmp_path / "table1.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns + ["avg_std", "runs", "runs_planned", "delta_vs_kd", "delta_low", "delta_high"])
        writer.writerow((1, "gpt2", "KD (KL)", "kd", "kl", "done", 27.804, 1.5, 3, 3, "", "", ""))
        writer.writerow((1, "gpt2", "KD w/ DSKD (KL)", "dskd", "kl", "partial", 25.0, 0.5, 2, 3, -2.8, -4.5, -1.25))
    (tmp_path / "claims.md").write_text("## The paper's claims in this run\n\n| Claim | ... |\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_results.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| KD | 27.80 ± 1.50 |" in done.stdout and "| KD w/ DSKD | 25.00 ± 0.50 (2 of 3 runs) |" in done.stdout
    assert "| KD w/ DSKD - KD [95% interval] | -2.80 [-4.50, -1.25] |" in done.stdout
    assert done.stdout.rstrip().endswith("| Claim | ... |") and "## The paper's claims" not in done.stdout


def test_readme_results_script_writes_and_checks_the_documentations_blocks(tmp_path):
    """--write puts the summary between README.md's markers and the claims between docs/results.md's, touching nothing
    outside them; --check fails, naming each stale page, until they match; a page without its markers is refused
    before either page is written."""
    import csv

    tables = tmp_path / "tables"
    tables.mkdir()
    with (tables / "table1.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "pair", "row", "method", "divergence", "status", "avg"])
        writer.writerow((1, "gpt2", "SFT", "sft", "", "done", 25.5))
        writer.writerow((1, "gpt2", "KD (KL)", "kd", "kl", "done", 27.804))
    (tables / "claims.md").write_text("## The paper's claims in this run\n\n**2 comparisons: 1 hold, 1 do not hold, 0 "
                                      "undecided.**\n\n- KD above SFT: holds.\n\n| Claim | ... |\n")
    readme, results = tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text("# Title\n\n<!-- readme_results.py: summary -->\nold\n<!-- /readme_results.py -->\n\nAfter.\n")
    results.write_text("Before.\n<!-- readme_results.py: claims -->\n<!-- /readme_results.py -->\n")

    def run(*flags):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "readme_results.py"), str(tables), *flags,
                               "--readme", str(readme), "--results-page", str(results)],
                              capture_output=True, text=True, timeout=60)

    stale = run("--check")
    assert stale.returncode != 0 and str(readme) in stale.stderr and str(results) in stale.stderr
    assert run("--write").returncode == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n<!-- readme_results.py: summary -->\n\n| Table 1: gpt2 pair | KL |")
    assert text.endswith("SFT rows: gpt2: SFT 25.50.\n\nThe paper's claims in this run: 2 comparisons: 1 hold, 1 do "
                         "not hold, 0 undecided.\n\n<!-- /readme_results.py -->\n\nAfter.\n")
    assert results.read_text() == ("Before.\n<!-- readme_results.py: claims -->\n\n**2 comparisons: 1 hold, 1 do not "
                                   "hold, 0 undecided.**\n\n- KD above SFT: holds.\n\n| Claim | ... |\n\n"
                                   "<!-- /readme_results.py -->\n")
    fresh = run("--check")
    assert fresh.returncode == 0 and "up to date" in fresh.stdout
    results.write_text("Before.\n")  # the markers gone: refused, README.md left as it was
    readme.write_text(text.replace("25.50", "0.00"))
    refused = run("--write")
    assert refused.returncode != 0 and str(results) in refused.stderr and "readme_results.py: claims" in refused.stderr
    assert "0.00" in readme.read_text()


def test_step_benchmark_script_runs_every_method(tmp_path):
    out = tmp_path / "bench.json"
    methods = ["sft", "kd:akl", "dskd:kl", "dskd_cma:kl", "uld", "mined", "seqkd", "dskd:kl+cache",
               "dskd_cma:kl+cache", "mined+cache", "floor:js"]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_steps.py"), "--vocab", "256",
                           "--methods", *methods, "--student", "1", "32", "2", "--teacher", "1", "48", "2",
                           "--length", "32", "--prompt", "8", "--rounds", "1", "--steps", "1", "--warmup", "0",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    results = {r["method"]: r for r in read_json(out)["results"]}
    assert set(results) == set(methods)
    assert all(r["median_s"] > 0 and r["peak_mb"] > 0 for r in results.values())
    assert results["seqkd"]["runs"][0]["black_box"] and "x SFT" in done.stdout


def test_grid_cost_script_sums_benchmarks_by_job_kind(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {"benchmarks/run_cell/gpt2/kd-kl/seed10.tsv": 20.0, "benchmarks/run_cell/gpt2/kd-js/seed20.tsv": 22.0,
             "benchmarks/run_cell/gpt2/teacher/seed10.tsv": 30.0, "benchmarks/cache_teacher/gpt2.tsv": 3.0,
             "benchmarks/make_tables.tsv": 2.0}
    for name, seconds in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0:00:20\t1\t1\t1\t1\t0\t0\t50\t{seconds}\n")
    for cell, seed, train in (("kd-kl", 10, 12.0), ("kd-js", 20, 13.0), ("teacher", 10, 25.0)):
        run = tmp_path / "runs" / "gpt2" / cell / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "train_summary.json").write_text(f'{{"train_seconds": {train}}}')
    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "grid_cost.py"), str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    kinds = read_json(out)["kinds"]
    assert kinds["run_cell: kd"] == {"jobs": 2, "seconds": 42.0, "training": 25.0}
    assert kinds["run_cell: teacher"]["training"] == 25.0 and kinds["cache_teacher"]["seconds"] == 3.0
    assert read_json(out)["total_seconds"] == 77.0 and "total" in done.stdout


def test_generation_benchmark_times_both_decoders_side_by_side(tmp_path, trained_tokenizers, small_splits):
    from repro.io import write_jsonl
    from repro.models import init_model
    from repro.vocab import load_tokenizer

    init_model({"arch": "gpt2", "layers": 1, "hidden": 16, "heads": 2, "max_positions": 256},
               load_tokenizer(trained_tokenizers["gpt2"]), tmp_path / "model", seed=0)
    write_jsonl(tmp_path / "test" / "dolly.jsonl", small_splits["test/dolly"])
    out = tmp_path / "generation.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_generation.py"), str(tmp_path / "model"),
                           str(tmp_path / "test"), "--config", str(REPO / "config" / "micro.yaml"), "--batch", "2",
                           "3", "--rounds", "1", "--limit", "5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = read_json(out)
    assert result["prompts"] == 5 and set(result["seconds"]) == {"generate 2", "generate 3", "loop 2", "loop 3"}
    assert result["ratio_to_generate"]["generate 2"] == 1.0 and "ms/prompt" in done.stdout
