"""GPU-hour estimates of the paper configuration, before anything runs."""
from conftest import REPO
from repro import estimate, grid
from repro.validation import load_config


def test_paper_estimates_cover_every_job_and_scale_with_the_models(capsys):
    config = load_config(REPO / "config" / "paper.yaml")
    rows = estimate.estimate(config)
    assert len(rows) == 2 * len(grid.runs(config)) + 4 == 112  # and one teacher-state cache job per pair
    hours = {(r["cell"], r["step"]): r["gpu_hours"] for r in rows}
    assert {c for c, step in hours if step == "cache"} == {f"{p}/teacher_states" for p in config["pairs"]}
    # a 7B LoRA teacher costs more than GPT2-1.5B's full SFT, which costs more than the 120M student's
    teacher, small_teacher, sft = (("llama/teacher/seed10", "train"), ("gpt2/teacher/seed10", "train"),
                                   ("gpt2/sft/seed10", "train"))
    assert hours[teacher] > hours[small_teacher] > hours[sft]
    # distillation adds the frozen teacher's forward passes
    kd = ("gpt2/kd-kl/seed10", "train")
    assert hours[kd] > hours[sft]
    assert 20 < sum(hours.values()) < 500
    assert all(r["request_minutes"] >= 10 for r in rows)
    # without the cache every distillation cell pays for its teacher's forward on every training token
    live = {(r["cell"], r["step"]): r["gpu_hours"] for r in estimate.estimate(estimate.without_teacher_cache(config))}
    assert not any(step == "cache" for _, step in live)
    assert live[kd] > 2 * hours[kd] - hours[sft]
    seqkd = ("qwen_gpt2/seqkd/seed10", "train")
    assert live[seqkd] == hours[seqkd]  # black box: no cache
    assert sum(hours.values()) < sum(live.values())
    estimate.main([str(REPO / "config" / "paper.yaml")])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert "llama/teacher/seed10" in out and "GPU-hours" in out and lines[-2].startswith("total")
    assert lines[-1].startswith("without the teacher-state cache") and "x with it" in lines[-1]


def test_an_unknown_model_offline_is_a_warning_and_a_fallback(monkeypatch):
    import pytest

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = load_config(REPO / "config" / "paper.yaml")
    config["models"]["gpt2_teacher"] = {"id": "someone/else"}
    with pytest.warns(UserWarning, match=r"models.gpt2_teacher.id': no config.json readable for 'someone/else'"):
        rows = estimate.estimate(config)
    assert estimate.parameters(config, "gpt2_teacher") == estimate.FALLBACK_SHAPE[0] and rows
    config["models"]["gpt2_teacher"]["architecture"] = {"arch": "llama", "layers": 2, "hidden": 64, "heads": 4,
                                                        "intermediate": 100, "vocab_size": 500}
    # offline, the config's published architecture is counted: embeddings and head, 2 x (attention, MLP, 2 norms)
    expected = 500 * 64 * 2 + 2 * (4 * 64 * 64 + 3 * 64 * 100 + 2 * 64) + 64
    assert estimate._shape(config, "gpt2_teacher") == (expected, 64, 500)


def test_the_paper_models_published_architectures_count_to_their_published_sizes():
    """paper.yaml's architectures (the numbers of each model's config.json) give the parameter counts the model
    cards state, so the offline estimate plans with the real sizes."""
    config = load_config(REPO / "config" / "paper.yaml")
    published = {"gpt2_teacher": 1.558e9, "gpt2_student": 1.245e8, "llama2_teacher": 6.738e9,
                 "tinyllama_student": 1.100e9, "mistral_teacher": 7.242e9, "qwen_teacher": 1.837e9}
    for name, size in published.items():
        counted, hidden, rows = estimate._shape(config, name)
        assert abs(counted / size - 1) < 0.005, (name, counted)
        assert (hidden, rows) == (config["models"][name]["architecture"]["hidden"],
                                  config["models"][name]["architecture"]["vocab_size"])


def test_parameters_are_counted_from_a_local_model_folder(tmp_path, trained_tokenizers):
    """A local save_pretrained folder as `id`: the count from its config.json is the model's own parameter count,
    for every architecture family (tied and untied heads, grouped-query heads, Qwen2's biases)."""
    from repro.models import init_model, load_model
    from repro.vocab import load_tokenizer

    specs = {"gpt2": ("gpt2", {}), "llama": ("llama", {"kv_heads": 1}), "mistral": ("mistral", {"kv_heads": 2}),
             "qwen2": ("qwen", {"pad_vocab_to_multiple_of": 64})}
    config = load_config(REPO / "config" / "paper.yaml")
    for arch, (tokenizer, extra) in specs.items():
        folder = tmp_path / arch
        init_model({"arch": arch, "layers": 2, "hidden": 32, "heads": 4, "max_positions": 128, **extra},
                   load_tokenizer(trained_tokenizers[tokenizer]), folder, seed=0)
        model = load_model(folder)
        config["models"]["gpt2_teacher"] = {"id": str(folder)}
        counted, hidden, rows = estimate._shape(config, "gpt2_teacher")
        assert counted == sum(p.numel() for p in model.parameters()), arch
        assert (hidden, rows) == (32, model.get_output_embeddings().weight.shape[0])


# ---------------------------------------------------------------------------------------------------------------
# The FLOP model against torch's own count of one real training step of every job kind

FLOP_KINDS = {  # name: (method, divergence, teacher (arch, tokenizer), student (arch, tokenizer), cached, lora)
    "sft": ("sft", None, None, ("gpt2", "gpt2"), False, False),
    "kd live": ("kd", "kl", ("gpt2", "gpt2"), ("gpt2", "gpt2"), False, False),
    "kd cached": ("kd", "akl", ("gpt2", "gpt2"), ("gpt2", "gpt2"), True, False),
    "dskd cached": ("dskd", "kl", ("gpt2", "gpt2"), ("gpt2", "gpt2"), True, False),
    "dskd live": ("dskd", "js", ("llama", "llama"), ("llama", "llama"), False, False),
    "dskd student space": ("dskd_student_space", "kl", ("gpt2", "gpt2"), ("gpt2", "gpt2"), True, False),
    "dskd_cma cached": ("dskd_cma", "kl", ("qwen2", "qwen"), ("gpt2", "gpt2"), True, False),
    "uld cached": ("uld", None, ("qwen2", "qwen"), ("gpt2", "gpt2"), True, False),
    "mined cached": ("mined", None, ("mistral", "mistral"), ("llama", "llama"), True, False),
    "lora sft": ("sft", None, None, ("llama", "llama"), False, True),
    "lora kd cached": ("kd", "kl", ("llama", "llama"), ("llama", "llama"), True, True),
}
LORA_SPEC = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _flop_model(arch: str, tokenizer, width: int, layers: int = 2):
    """A model of ``arch`` with eager attention (its products are matrix products that torch's counter sees; the
    CPU's fused attention kernel has no FLOP formula)."""
    import torch
    from transformers import AutoModelForCausalLM

    from repro.models import build_config

    rows = len(tokenizer) + (37 if arch == "qwen2" else 0)  # Qwen1.5's head rows beyond its tokenizer's ids
    config = build_config(arch, rows, layers, width, 4, kv_heads=2 if arch == "mistral" else None, max_positions=256,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, dropout=0.0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def _work(batch: dict) -> estimate.Work:
    """The positions of one collated micro batch (padded lengths, as the step computes them)."""
    from repro.data import IGNORE

    b, length = batch["input_ids"].shape
    work = {"tokens": b * length, "squares": b * length ** 2, "rows": int((batch["labels"] != IGNORE).sum())}
    if "teacher_input_ids" in batch:
        tb, t_length = batch["teacher_input_ids"].shape
        work.update(teacher_tokens=tb * t_length, teacher_squares=tb * t_length ** 2,
                    teacher_rows=int((batch["teacher_labels"] != IGNORE).sum()))
    if "teacher_positions" in batch:
        response = batch["labels"] != IGNORE
        work["aligned"] = int((response & (batch["teacher_positions"] >= 0)).sum())
    return estimate.Work(**work)


def test_the_flops_of_every_job_kind_match_torchs_count_of_a_real_step(tmp_path, trained_tokenizers, small_splits):
    """One optimiser step of each job kind (``repro.training.Trainer``: two micro batches of real encoded examples,
    two-layer models, the teacher live or from its cache, LoRA on q/v) counted by ``FlopCounterMode``, against
    ``estimate.train_flops`` over the same micro batches: within 1% (the issue asks for 10%; the count is exact
    for these batches). DSKD's extra passes through both heads and DSKD-CMA's cross-model attention are in both."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from repro import teacher_states
    from repro.data import collate
    from repro.memory import Dims
    from repro.methods import get_method
    from repro.models import add_lora, load_teacher_parts
    from repro.settings import TrainSettings
    from repro.training import Trainer, build_context
    from repro.vocab import load_tokenizer

    torch.set_num_threads(1)
    rows = small_splits["train"][:8]
    results = {}
    for name, (method_name, divergence, t_spec, s_spec, cached, lora) in FLOP_KINDS.items():
        method = get_method(method_name)
        s_tok = load_tokenizer(trained_tokenizers[s_spec[1]])
        student = _flop_model(s_spec[0], s_tok, 32)
        if lora:  # (a LoRA run names the checkpoint its frozen base comes from)
            student.save_pretrained(tmp_path / "lora_base")
            student.name_or_path = str(tmp_path / "lora_base")
            student = add_lora(student, LORA_SPEC)
        settings = TrainSettings(lr=1e-3, epochs=1, batch_size=8, micro_batch_size=4, max_length=128,
                                 max_prompt_length=64, lora=LORA_SPEC if lora else None)
        teacher = t_tok = states = None
        if t_spec is not None:
            t_tok = load_tokenizer(trained_tokenizers[t_spec[1]])
            teacher = _flop_model(t_spec[0], t_tok, 48).eval().requires_grad_(False)
            if cached:  # the cache job's states, and the head (and embeddings) a cached cell holds
                folder = tmp_path / name.replace(" ", "_")
                teacher.save_pretrained(folder)
                from repro.data import encode_dataset

                side = encode_dataset(rows, t_tok, settings.max_length, settings.max_prompt_length)
                states = teacher_states.build(teacher, side, t_tok.pad_token_id, {"test": True},
                                              cma=("official",) if method_name == "dskd_cma" else (),
                                              max_length=settings.max_length)
                teacher = load_teacher_parts(folder, embeddings=method.teacher_embeddings)
        ctx = build_context(settings, s_tok, divergence, teacher, t_tok if method.cross_vocab else None, states)
        run = Trainer(student, s_tok, rows, method, ctx, tmp_path / "run", accelerator=None)
        items = run.encoded[:settings.batch_size]
        with FlopCounterMode(display=False) as counter:
            run.optimiser_step(1, items)
        local = sorted(items, key=lambda e: len(e.input_ids))
        expected = 0.0
        s_dims = Dims.from_fields(student.config.to_dict())
        t_dims = Dims.from_fields(ctx.teacher.config.to_dict()) if teacher is not None else None
        for k in range(0, len(local), settings.micro_batch_size):
            batch = collate(local[k:k + settings.micro_batch_size], s_tok.pad_token_id, run.teacher_pad_id)
            parts = estimate.train_flops(s_dims, _work(batch), method_name, t_dims,
                                         (LORA_SPEC["rank"], LORA_SPEC["target_modules"]) if lora else None, cached,
                                         len(s_tok), len(t_tok) if t_tok is not None else None)
            expected += sum(parts.values())
        results[name] = (counter.get_total_flops(), expected)
    off = {name: f"{counted:.3g} counted, {expected:.3g} estimated" for name, (counted, expected) in results.items()
           if abs(expected / counted - 1) > 0.01}
    assert not off, off
    # DSKD's passes through both heads cost more than KD's one teacher head (the same student, data and cache)
    assert results["dskd cached"][1] > results["kd cached"][1] > results["sft"][1]


def test_the_table_names_each_jobs_peak_gpu_memory_and_the_smallest_gpu_it_fits(capsys):
    """At the paper's depth: a 7B LoRA teacher's training does not fit 24 GB, the LLaMA2-7B -> TinyLLaMA KD with
    LoRA and the teacher-state cache does (its teacher's head alone, a bf16 base, the adapters' state), the
    GPT2-1.5B teacher's full fine-tuning needs 80 GB."""
    config = load_config(REPO / "config" / "paper.yaml")
    rows = {(r["cell"], r["step"]): r for r in estimate.estimate(config)}
    llama_kd = rows[("llama/kd-kl/seed10", "train")]
    assert llama_kd["fits"] == 24 and llama_kd["memory_gb"] < 24
    assert "teacher head" in llama_kd["memory"] or "activations" in llama_kd["memory"]
    assert rows[("llama/teacher/seed10", "train")]["fits"] >= 40
    assert rows[("gpt2/teacher/seed10", "train")]["fits"] == 80
    assert all(r["fits"] in (24, 40, 80, 141, None) for r in rows.values())
    estimate.main([str(REPO / "config" / "paper.yaml")])
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("cell"))
    assert "peak GB" in header and "fits" in header and header.rstrip().endswith("host GB")
    kd_line = next(line for line in lines if line.startswith("llama/kd-kl/seed10") and " train " in line)
    assert kd_line.split()[-3:] == ["24", "GB", f"{llama_kd['host_gb']:.1f}"]
    assert f"{llama_kd['memory_gb']:.1f}" in kd_line


def test_a_cluster_job_asks_for_the_host_memory_its_phases_on_the_host_hold():
    """``mem_mb``: on a GPU node what the host holds of the job (a 7B LoRA teacher's merge into an fp32 copy of its
    base beside the checkpoint read in its stored dtype; a cached student's loading in fp32), with the process's
    baseline, the CUDA runtime, the workflow's process and the margin; on a CPU node the CPU prediction."""
    from repro import memory

    config = load_config(REPO / "config" / "paper.yaml")
    teacher = grid.teacher_run(config, grid.Cell("llama", "sft", role="teacher"))
    cpu = estimate.job_memory(config, teacher, "train", device="cpu", precision_device="gpu")
    merge = cpu.breakdown["LoRA merge"]
    params = estimate.dims(config, "llama2_teacher").parameters
    assert merge["fp32 base"] == 4 * params and merge["stored copy"] == 2 * params  # the hub's fp16 files
    held = merge["fp32 base"] + merge["stored copy"] + merge["tokenizers"]
    overhead = memory.PROCESS_BASELINE_BYTES + memory.CUDA_HOST_BYTES
    assert estimate.job_host_mb(config, teacher, "train", gpu=True) == \
        memory.ceil_mb(memory.HOST_MARGIN * (held + overhead + memory.WORKFLOW_PROCESS_BYTES))
    assert estimate.job_host_mb(config, teacher, "train", gpu=True) < 60_000  # fits a common 64 GB request
    # a cached LoRA student on a GPU node: its bf16 base while it loads, far below what the CPU would hold
    kd = grid.find_run(config, "llama", "kd-kl", 10)
    on_gpu, on_cpu = (estimate.job_host_mb(config, kd, "train", gpu) for gpu in (True, False))
    student = estimate.dims(config, "tinyllama_student").parameters
    assert 2 * student * memory.HOST_MARGIN / 1e6 < on_gpu < on_cpu
    cpu_kd = estimate.job_memory(config, kd, "train", device="cpu")
    assert on_cpu == memory.ceil_mb(memory.HOST_MARGIN * (cpu_kd.total + memory.PROCESS_BASELINE_BYTES
                                                          + memory.WORKFLOW_PROCESS_BYTES))
    # the cache job gathers its states on the host: twice their size while they are concatenated
    cache = estimate.cache_memory(config, "llama", device="cpu", precision_device="gpu")
    states = cache.breakdown["concatenation"]["states"]
    assert estimate.cache_host_mb(config, "llama", gpu=True) >= memory.ceil_mb(memory.HOST_MARGIN * states)


def test_a_declared_gpu_memory_names_each_job_that_cannot_fit_in_one_line(tmp_path):
    config = load_config(REPO / "config" / "paper.yaml")
    assert estimate.memory_problems(config) == []  # nothing declared: nothing checked
    config["gpu_memory_gb"] = 24
    problems = estimate.memory_problems(config)
    predicted = {(r["cell"], r["step"]): r["memory_gb"] for r in estimate.estimate(config)}
    over = {key for key, gb in predicted.items() if gb > 24}
    assert len(problems) == len(over) > 0
    line = next(p for p in problems if p.startswith("job gpt2/teacher/seed10 (train)"))
    assert "\n" not in line and "predicted peak GPU memory" in line and "exceeds gpu_memory_gb 24" in line
    assert f"{predicted[('gpt2/teacher/seed10', 'train')]:.3g} GB" in line
    config["gpu_memory_gb"] = 141
    assert estimate.memory_problems(config) == []


def test_a_real_run_with_too_little_declared_gpu_memory_stops_before_any_job(tmp_path):
    """``--config gpu_memory_gb=...`` on the command line: the run stops in the Snakefile's ``onstart``, one line per
    job that cannot fit, and nothing runs."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                           str(REPO / "config" / "micro.yaml"), "--config", "gpu_memory_gb=0.001", "--directory",
                           str(tmp_path), "-c1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode != 0
    assert "Nothing was run:" in done.stderr
    lines = [line.strip() for line in done.stderr.splitlines() if "exceeds gpu_memory_gb 0.001" in line]
    assert any(line.startswith("job gpt2/teacher/seed10 (train): predicted peak GPU memory") for line in lines)
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.json"))


def test_tokens_per_example_are_read_from_the_data_with_the_models_tokenizer(tmp_path, trained_tokenizers,
                                                                            small_splits):
    """With the training data present, the estimate's tokens per example, response share and longest example are
    those of ``repro.data``'s tokenisation (exactly); without a readable tokenizer, characters per token stand in;
    without data, Dolly's measured means."""
    from repro.data import IGNORE, encode_dataset
    from repro.io import write_jsonl
    from repro.vocab import load_tokenizer

    config = load_config(REPO / "config" / "paper.yaml")
    training = grid.cell_training(config, grid.Cell("gpt2", "sft"))
    assert estimate.data_stats(config, "gpt2_student", training).source.startswith("assumed")
    assert estimate.data_stats(config, "gpt2_student", training).tokens == estimate.DOLLY["gpt2"][0]
    rows = small_splits["train"][:40]
    write_jsonl(tmp_path / "dolly" / "train.jsonl", rows)
    config["data"]["path"] = str(tmp_path)
    config["models"]["gpt2_student"] = {"id": str(trained_tokenizers["gpt2"]),
                                        "architecture": config["models"]["gpt2_student"]["architecture"]}
    stats = estimate.data_stats(config, "gpt2_student", training)
    encoded = encode_dataset(rows, load_tokenizer(trained_tokenizers["gpt2"]), training["max_length"],
                             training["max_prompt_length"])
    lengths = [len(e.input_ids) for e in encoded]
    responses = [sum(label != IGNORE for label in e.labels) for e in encoded]
    assert stats.examples == 40 and "tokenised" in stats.source
    assert stats.tokens == sum(lengths) / 40 and stats.rows == sum(responses) / 40
    assert (stats.longest, stats.longest_rows) == (max(lengths), max(responses))
    config["models"]["gpt2_student"] = {"id": str(tmp_path / "no-such-model"),
                                        "architecture": config["models"]["gpt2_student"]["architecture"]}
    by_characters = estimate.data_stats(config, "gpt2_student", training)
    assert "characters per token" in by_characters.source and by_characters.examples == 40


def test_the_checkpoints_stored_dtype_sets_what_their_readers_convert_on_a_cpu():
    """A trained checkpoint is stored in ``training.checkpoint_dtype`` (``auto``: the precision's frozen dtype);
    on a CPU an fp32 reader of a bf16 checkpoint holds both copies while it converts: the Qwen1.5 teacher's cache
    and a full fine-tune's evaluation in the fp32 rehearsal grid, which stores its checkpoints in bf16."""
    config = load_config(REPO / "config" / "paper.yaml")
    config["training"]["precision"] = "fp32"
    teacher = estimate.dims(config, "qwen_teacher").parameters
    student = estimate.dims(config, "gpt2_student").parameters
    sft = grid.find_run(config, "qwen_gpt2", "uld", 10)
    for dtype, copy in (("auto", 0), ("float32", 0), ("bfloat16", 2)):
        config["training"]["checkpoint_dtype"] = dtype
        cache = estimate.cache_memory(config, "qwen_gpt2", device="cpu")
        assert cache.breakdown["loading"]["stored copy"] == copy * teacher, dtype
        evaluation = estimate.job_memory(config, sft, "evaluate", device="cpu")
        assert evaluation.breakdown["loading"]["stored copy"] == copy * student, dtype
