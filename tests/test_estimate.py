"""GPU-hour estimates of the paper configuration, before anything runs."""
from conftest import REPO
from repro import estimate, grid
from repro.config import load_config


def test_paper_estimates_cover_every_job_and_scale_with_the_models(capsys):
    config = load_config(REPO / "config" / "paper.yaml")
    rows = estimate.estimate(config)
    assert len(rows) == 2 * len(grid.cells(config)) == 108
    hours = {(r["cell"], r["step"]): r["gpu_hours"] for r in rows}
    # a 7B LoRA teacher costs more than GPT2-1.5B's full SFT, which costs more than the 120M student's
    assert hours[("llama/teacher", "train")] > hours[("gpt2/teacher", "train")] > hours[("gpt2/sft", "train")]
    # distillation adds the frozen teacher's forward passes
    assert hours[("gpt2/kd-kl", "train")] > hours[("gpt2/sft", "train")]
    assert 20 < sum(hours.values()) < 500
    assert all(r["request_minutes"] >= 10 for r in rows)
    estimate.main([str(REPO / "config" / "paper.yaml")])
    out = capsys.readouterr().out
    assert "llama/teacher" in out and "GPU-hours" in out and out.strip().splitlines()[-1].startswith("total")


def test_unknown_hub_models_are_named():
    import pytest

    config = load_config(REPO / "config" / "paper.yaml")
    config["models"]["gpt2_teacher"] = {"id": "someone/else"}
    with pytest.raises(ValueError, match=r"models.gpt2_teacher.id': no parameter count known for 'someone/else'"):
        estimate.estimate(config)
