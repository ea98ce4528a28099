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


def test_unknown_hub_models_are_named():
    import pytest

    config = load_config(REPO / "config" / "paper.yaml")
    config["models"]["gpt2_teacher"] = {"id": "someone/else"}
    with pytest.raises(ValueError, match=r"models.gpt2_teacher.id': no parameter count known for 'someone/else'"):
        estimate.estimate(config)
