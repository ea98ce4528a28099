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


# What the C allocator may keep of freed buffers beyond the model: glibc serves blocks under its dynamic mmap
# threshold (which rises to at most 32 MiB on 64-bit) from its heap and need not hand them back, so the same job's
# peak moves by tens of MB between runs and machines. Measured: "lora kd live (bf16)" 266-281 MB over four runs here
# (predicted 263), 313 MB on the CI machine; at these widths the jobs are 100-1,400 MB, so the slack matters only
# for the small ones.
ALLOCATOR_SLACK = 32 * 2**20


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
    from memory_check import Setup, check

    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    jobs = _test_jobs()
    setup = Setup(tmp_path, SHARED / "tokenizers", SHARED / "data" / "minillm", TEST_WIDTHS, rows=8, micro=2,
                  max_new_tokens=32, jobs=jobs)
    results = check(setup, jobs)
    off = {r["job"]: f"measured {r['measured'] / 1e6:.0f} MB, predicted {r['predicted'] / 1e6:.0f} MB "
                     f"({r['phase']})" for r in results
           if abs(r["measured"] - r["predicted"]) > 0.15 * r["predicted"] + ALLOCATOR_SLACK}
    assert not off, off
    for r in results:  # every job recorded its memory (the record the workflow's jobs write)
        assert r["record"]["peak_reset"] and r["record"]["rss_baseline"] > 0
