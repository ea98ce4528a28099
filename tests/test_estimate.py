"""GPU-hour estimates of the paper configuration, before anything runs."""
from conftest import REPO
from repro import estimate, grid
from repro.config import load_config


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
