"""The memory model (``repro.memory``) against what the jobs hold: the activations each architecture family saves,
counted from its autograd graph, and the measured peak resident memory of every job kind, run as the workflow runs
it in a fresh process (``scripts/memory_check.py``) at small widths with the real tokenizers and data."""
import sys

import pytest

from conftest import REPO, SHARED
from repro import memory

sys.path.insert(0, str(REPO / "scripts"))


def _saved_bytes(model, batch: dict, autocast: bool) -> int:
    """Bytes of the tensors autograd saves for the backward of ``model``'s body on ``batch``, each storage once,
    without the parameters and autocast's copies of them (2-d tensors of a weight's shape)."""
    import torch

    from repro.methods import final_hidden

    params = {p.data_ptr() for p in model.parameters()}
    tokens = batch["input_ids"].numel()
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        weight_copy = t.dim() == 2 and t.shape[0] != tokens
        if storage.data_ptr() not in params and not weight_copy:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            final_hidden(model, batch)
    return sum(seen.values())


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral", "qwen2"])
def test_activation_bytes_are_what_each_family_saves_for_its_backward(arch):
    """``activation_bytes`` against the saved tensors of a 2-layer model of each family (training mode, padding in
    the batch), in fp32 and under bf16 autocast, fully trained and with a frozen bf16/fp32 base and LoRA adapters
    on q/v: within 10%."""
    import torch
    from transformers import AutoModelForCausalLM

    from repro.models import add_lora, build_config

    torch.set_num_threads(1)
    b, length = 3, 48
    ids = torch.randint(0, 300, (b, length))
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, -7:] = 0
    batch = {"input_ids": ids, "attention_mask": mask}
    for autocast in (False, True):
        for lora in (False, True):
            config = build_config(arch, 300, 2, 64, 4, kv_heads=2 if arch == "mistral" else None, max_positions=128,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
            spec = None
            if lora:
                modules = ["c_attn"] if arch == "gpt2" else ["q_proj", "v_proj"]
                model = add_lora(model.to(torch.bfloat16 if autocast else torch.float32),
                                 {"rank": 8, "alpha": 8, "dropout": 0.1, "target_modules": modules})
                spec = (8, modules)
            model.train()
            measured = _saved_bytes(model, batch, autocast)
            dims = memory.Dims.from_fields(config.to_dict())
            predicted = memory.activation_bytes(dims, b * length, length, autocast, "cpu", spec)
            assert abs(predicted / measured - 1) < 0.10, (arch, autocast, lora, measured, predicted)


def test_lora_and_projector_parameters_are_counted_as_peft_and_the_methods_build_them(trained_tokenizers):
    import torch
    from transformers import AutoModelForCausalLM

    from repro.methods import get_method
    from repro.models import add_lora, build_config

    for arch, modules in (("llama", ["q_proj", "v_proj"]), ("mistral", ["k_proj", "down_proj"]),
                          ("gpt2", ["c_attn", "c_fc"])):
        config = build_config(arch, 300, 2, 64, 4, kv_heads=2 if arch == "mistral" else None, max_positions=128)
        model = add_lora(AutoModelForCausalLM.from_config(config), {"rank": 4, "alpha": 8, "dropout": 0.0,
                                                                   "target_modules": modules})
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert memory.Dims.from_fields(config.to_dict()).lora_parameters(4, modules) == trained, arch
    with pytest.raises(ValueError, match=r"LoRA target module 'q_proj' is not a linear module of a gpt2 layer"):
        memory.Dims.from_fields(build_config("gpt2", 300, 1, 64, 4).to_dict()).lora_parameters(4, ["q_proj"])
    student = AutoModelForCausalLM.from_config(build_config("gpt2", 300, 1, 32, 4))
    teacher = AutoModelForCausalLM.from_config(build_config("llama", 300, 1, 48, 4))
    for name in ("dskd", "dskd_student_space", "dskd_cma"):
        built = get_method(name).build(student, teacher)
        assert memory._projectors(name, 32, 48) == sum(p.numel() for p in built.parameters()), name
    torch.manual_seed(0)


def test_a_memory_mapped_untied_input_embedding_makes_the_cpu_peak_a_range():
    """On a CPU a model held in its files' dtype stays memory-mapped, and the jobs read only some rows of an untied
    input embedding: the evaluation, the cache job and a training (its live teacher, its LoRA base) name it
    ``mapped`` (their peak lies between total - mapped and total); a model cast on loading, a tied one (the head
    reads every row), a merged adapter, a cached head and a GPU hold it whole."""
    llama = memory.Dims("llama", 1, 4096, 11008, 32, 32, 128, 32000, 4096, False)
    gpt2 = memory.Dims("gpt2", 1, 1600, 6400, 25, 25, 64, 50257, 1024, True)
    sampling = memory.Sampling(4, 256, 8)
    embedding = 32000 * 4096 * 2
    assert memory.evaluate_peak(llama, sampling, True, "cpu", stored_bytes=2).mapped == embedding
    assert memory.evaluate_peak(llama, sampling, False, "cpu", stored_bytes=4).mapped == 2 * embedding
    for other in (memory.evaluate_peak(llama, sampling, True, "cpu", stored_bytes=4),
                  memory.evaluate_peak(llama, sampling, True, "gpu", stored_bytes=2),
                  memory.evaluate_peak(llama, sampling, True, "cpu", stored_bytes=2, adapter=True),
                  memory.evaluate_peak(gpt2, sampling, True, "cpu", stored_bytes=2)):
        assert other.mapped == 0
    batch = memory.Batch(4, 256, 512)
    assert memory.cache_peak(llama, batch, 8, 512, True, "cpu", stored_bytes=2).mapped == embedding
    assert memory.cache_peak(gpt2, batch, 8, 512, True, "cpu", stored_bytes=2).mapped == 0
    # training: a live teacher held in its files' dtype, a LoRA student's frozen base in its files' dtype
    tiny = memory.Dims("llama", 1, 2048, 5632, 32, 4, 64, 32000, 2048, False)
    lora = (16, ["q_proj", "v_proj"])
    def train(**kw):
        return memory.train_peak(memory.TrainJob(tiny, batch, **{"method": "kd", "teacher": llama, "bf16": True,
                                                                   "stored_bytes": 2, **kw}), "cpu")
    assert train(lora=lora).mapped == embedding + 32000 * 2048 * 2
    assert train().mapped == embedding  # a fully trained student is read whole by its step
    assert train(teacher_cache=True).mapped == 0  # the cached head is read whole
    assert train(teacher_stored_bytes=4).mapped == 0  # the teacher cast on loading
    assert memory.train_peak(memory.TrainJob(tiny, batch, method="kd", teacher=llama, bf16=True, stored_bytes=2),
                             "gpu").mapped == 0


def test_a_job_records_its_memory_and_the_peak_is_reset_at_its_start():
    """``start_measure`` resets the high-water mark, so a job's peak is its own; ``finish_measure`` names the
    baseline, the peak and their difference."""
    start = memory.start_measure()
    block = bytearray(64 * 2**20)  # touched: 64 MiB resident
    block[::4096] = b"x" * len(block[::4096])
    record = memory.finish_measure(start)
    assert record["peak_reset"] and record["rss_increase"] >= 60 * 2**20
    del block
    again = memory.finish_measure(memory.start_measure())
    assert again["rss_increase"] < 32 * 2**20, again  # the 64 MiB of before are not this one's peak
    assert again["gpu_max_allocated"] is None


_RETAINED = """
import ctypes, os, sys
sys.path.insert(0, {repo!r})
from repro import memory
threshold = memory.fix_mmap_threshold()
big = bytearray(8 << 20)  # mapped (above the starting 128 KiB threshold); freeing it raises a dynamic threshold
del big
before = memory.rss_bytes()
blocks, pins = [], []
for _ in range(16):  # 2 MiB blocks between small live ones: what the heap frees here cannot be trimmed
    block = bytearray(2 << 20)
    block[::4096] = b"x" * len(block[::4096])
    blocks.append(block)
    pins.append(bytearray(64))
del blocks
print(threshold, memory.rss_bytes() - before)
"""


def test_a_job_fixes_glibcs_mmap_threshold_so_freed_blocks_leave_the_process(tmp_path):
    """With glibc's dynamic default the 2 MiB blocks a job frees after an 8 MiB one stay resident in its heap; with
    the threshold fixed (``fix_mmap_threshold``, what every job does when it starts) they are mapped and given
    back. ``REPRO_MMAP_THRESHOLD`` names another threshold or ``glibc``; anything else is refused, naming it."""
    import os
    import subprocess

    def retained(setting):
        env = {k: v for k, v in os.environ.items() if k != memory.MMAP_THRESHOLD_ENV}
        env.update({memory.MMAP_THRESHOLD_ENV: setting} if setting else {})
        done = subprocess.run([sys.executable, "-c", _RETAINED.format(repo=str(REPO))], env=env, capture_output=True,
                              text=True, check=True, timeout=60)
        threshold, kept = done.stdout.split()
        return threshold, int(kept)

    fixed, default, chosen = retained(None), retained("glibc"), retained(str(4 << 20))
    assert fixed[0] == str(memory.MMAP_THRESHOLD) and fixed[1] < 4 << 20, fixed
    assert default[0] == "None" and default[1] > 24 << 20, default  # 16 blocks of 2 MiB kept
    assert chosen[0] == str(4 << 20) and chosen[1] > 24 << 20, chosen  # under a 4 MiB threshold: the heap's
    for bad in ("1MB", "0", str(64 << 20)):
        os.environ[memory.MMAP_THRESHOLD_ENV] = bad
        try:
            with pytest.raises(ValueError, match=f"environment variable REPRO_MMAP_THRESHOLD='{bad}': expected a "
                                                 "number of bytes"):
                memory.fix_mmap_threshold()
        finally:
            del os.environ[memory.MMAP_THRESHOLD_ENV]


def test_a_bad_mmap_threshold_stops_the_run_before_any_job(tmp_path):
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                           str(REPO / "config" / "micro.yaml"), "--directory", str(tmp_path), "-c1"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", memory.MMAP_THRESHOLD_ENV: "lots"})
    assert done.returncode != 0
    assert "Nothing was run:\n  environment variable REPRO_MMAP_THRESHOLD='lots': expected" in done.stderr, \
        done.stderr[-2000:]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


# ---------------------------------------------------------------------------------------------------------------
# Every job kind, measured


def _test_jobs():
    from memory_check import Job

    return [
        Job("cache gpt2 (CMA)", "cache", "gpt2_teacher", cma=True),
        Job("sft", "train", "gpt2_student"),
        Job("kd live", "train", "gpt2_student", "kd", "gpt2_teacher", "kl"),
        Job("kd cached", "train", "gpt2_student", "kd", "gpt2_teacher", "akl", cache="cache gpt2 (CMA)"),
        Job("dskd cached", "train", "gpt2_student", "dskd", "gpt2_teacher", "kl", cache="cache gpt2 (CMA)"),
        Job("dskd_cma cached", "train", "gpt2_student", "dskd_cma", "gpt2_teacher", "kl", cache="cache gpt2 (CMA)"),
        Job("uld cached", "train", "gpt2_student", "uld", "gpt2_teacher", cache="cache gpt2 (CMA)"),
        Job("mined cached", "train", "gpt2_student", "mined", "gpt2_teacher", cache="cache gpt2 (CMA)"),
        # (the wider model as the student: its training, not the allocator's leftovers of the sampling, sets the peak)
        Job("seqkd", "train", "gpt2_teacher", "seqkd", "gpt2_student"),
        Job("lora sft (bf16)", "train", "tinyllama_student", bf16=True, lora=True),
        Job("lora kd live (bf16)", "train", "tinyllama_student", "kd", "llama_teacher", "kl", bf16=True, lora=True),
        Job("evaluate", "evaluate", "gpt2_student", needs=["sft"]),
        Job("evaluate lora (bf16)", "evaluate", "tinyllama_student", bf16=True, lora=True, needs=["lora sft (bf16)"]),
    ]


TEST_WIDTHS = {"gpt2_teacher": ("gpt2", "gpt2", 192, 4, None, None),
               "gpt2_student": ("gpt2", "gpt2", 128, 4, None, None),
               "llama_teacher": ("llama", "llama2", 192, 4, None, 512),
               "tinyllama_student": ("llama", "llama2", 128, 4, 2, 352)}




@pytest.mark.skipif(not (SHARED / "tokenizers" / "gpt2").is_dir() or not (SHARED / "data" / "minillm").is_dir(),
                    reason="needs the real tokenizers and data in ../shared")
def test_every_job_kind_peaks_within_15_percent_of_the_prediction(tmp_path, monkeypatch):
    """Each job kind (the cache job with DSKD-CMA's statistics, SFT, KD with the live and the cached teacher, DSKD,
    DSKD-CMA, ULD, MinED, SeqKD, LoRA in bf16 autocast with and without a teacher, the evaluation) runs as the
    workflow runs it, each in a fresh process forked from one that did the imports (its library pages touched
    again, so the baseline is a fresh process's), on one-layer models with the real GPT-2 and LLaMA-2 tokenizers
    and 8 Dolly rows (two optimiser steps of two micro batches; 32 sampled tokens): the growth of its resident memory
    over its baseline, recorded by the job itself, is within 15% of ``repro.memory``'s prediction for the same
    batches, plus the allocator's slack."""
    from memory_check import Setup, check, within

    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    jobs = _test_jobs()
    setup = Setup(tmp_path, SHARED / "tokenizers", SHARED / "data" / "minillm", TEST_WIDTHS, rows=8, micro=2,
                  max_new_tokens=32, jobs=jobs)
    results = check(setup, jobs)
    off = {r["job"]: f"measured {r['measured'] / 1e6:.0f} MB, predicted {r['predicted'] / 1e6:.0f} MB "
                     f"({r['phase']})" for r in results
           if not within(r["measured"], r["predicted"], r["mapped"])}
    assert not off, off
    for r in results:  # every job recorded its memory (the record the workflow's jobs write), glibc's threshold fixed
        assert r["record"]["peak_reset"] and r["record"]["rss_baseline"] > 0
        assert r["record"]["mmap_threshold"] == memory.MMAP_THRESHOLD
