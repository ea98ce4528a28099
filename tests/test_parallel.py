"""Data-parallel training through accelerate: two CPU processes take the same steps as one process with the
whole global batch."""
import dataclasses

import pytest
import torch

from conftest import make_pair
from repro.cells import CellConfig, run_training
from repro.io import read_json, read_jsonl
from repro.models import load_model
from repro.settings import TrainSettings
from repro.synthetic import write_splits


def test_settings_split_the_global_batch_among_processes():
    s = TrainSettings(lr=1e-3, epochs=1, batch_size=32, micro_batch_size=4, processes=2)
    assert s.gradient_accumulation == 4
    with pytest.raises(ValueError, match="micro_batch_size x processes"):
        TrainSettings(lr=1e-3, epochs=1, batch_size=32, micro_batch_size=8, processes=3)
    with pytest.raises(ValueError, match="precision"):
        TrainSettings(lr=1e-3, epochs=1, precision="fp16")
    assert s.mixed_precision(on_gpu=True) == "bf16" and s.mixed_precision(on_gpu=False) == "no"
    assert dataclasses.replace(s, precision="fp32").mixed_precision(on_gpu=True) == "no"


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path, trained_tokenizers, small_splits):
    splits = {"train": small_splits["train"][:40], "dev": small_splits["dev"][:3],
              **{k: v[:2] for k, v in small_splits.items() if k not in ("train", "dev")}}
    write_splits(splits, tmp_path / "data")
    make_pair(tmp_path, trained_tokenizers)

    def cell(name, processes, **extra):
        # 40 examples in global batches of 16: the last batch (8) splits 4/4, micro batches of 4.
        training = {"lr": 5e-3, "epochs": 1, "batch_size": 16, "micro_batch_size": 4, "max_length": 256,
                    "max_prompt_length": 128, "dev_seeds": [10], "processes": processes, **extra}
        return CellConfig(cell_id=f"p/{name}", pair="p", method="dskd", role="student", divergence="kl",
                          model=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"),
                          data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / name), training=training,
                          evaluation={"seeds": [10], "max_new_tokens": 4, "batch_size": 4})

    one = run_training(cell("one", 1))
    two = run_training(cell("two", 2))
    # ZeRO stage 1: the optimiser state is split, and gathered into the resume state every step.
    zero = run_training(cell("zero", 2, shard_optimizer=True, checkpoint_every=1))
    assert zero["steps"] == 3
    assert two["batching"]["processes"] == 2 and two["batching"]["gradient_accumulation"] == 2
    assert one["batching"]["gradient_accumulation"] == 4 and one["steps"] == two["steps"] == 3
    logs = [[r for r in read_jsonl(tmp_path / name / "train_log.jsonl") if "step" in r]
            for name in ("one", "two", "zero")]
    for a, b, c in zip(*logs):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["kd"] == pytest.approx(a["kd"], rel=1e-5)
        assert c["loss"] == pytest.approx(a["loss"], rel=1e-5)
    weights = [load_model(tmp_path / name / "model").state_dict() for name in ("one", "two", "zero")]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(weights[2][key], value, atol=2e-5, rtol=1e-4)
    assert read_json(tmp_path / "two" / "train_summary.json")["config"]["training"]["processes"] == 2


@pytest.mark.slow
def test_cma_steps_do_not_depend_on_micro_batches_or_processes(tmp_path, trained_tokenizers, small_splits):
    """DSKD-CMA with its official normalisation (standard deviations as if every sequence were padded to
    max_length, a Qwen-like teacher with padded head rows kept): global batches of 8 as micro batches of 8, of 2,
    and in two processes of micro batches of 2 take the same steps."""
    splits = {"train": small_splits["train"][:24], "dev": small_splits["dev"][:2],
              **{k: v[:2] for k, v in small_splits.items() if k not in ("train", "dev")}}
    write_splits(splits, tmp_path / "data")
    make_pair(tmp_path, trained_tokenizers, teacher=("qwen2", "qwen"))

    def cell(name, processes, micro):
        training = {"lr": 5e-3, "epochs": 1, "batch_size": 8, "micro_batch_size": micro, "max_length": 256,
                    "max_prompt_length": 128, "dev_seeds": [10], "processes": processes}
        return CellConfig(cell_id=f"p/{name}", pair="p", method="dskd_cma", role="student", divergence="kl",
                          model=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"),
                          data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / name), training=training,
                          evaluation={"seeds": [10], "max_new_tokens": 4, "batch_size": 4})

    runs = {"whole": (1, 8), "micro": (1, 2), "two": (2, 2)}
    for name, (processes, micro) in runs.items():
        assert run_training(cell(name, processes, micro))["steps"] == 3
    logs = {name: [r for r in read_jsonl(tmp_path / name / "train_log.jsonl") if "step" in r] for name in runs}
    for name in ("micro", "two"):
        for a, b in zip(logs["whole"], logs[name]):
            for term in ("loss", "t2s_ce", "t2s_kd", "s2t_kd"):
                assert b[term] == pytest.approx(a[term], rel=1e-5, abs=1e-7), (name, term)
    weights = {name: load_model(tmp_path / name / "model").state_dict() for name in runs}
    for key, value in weights["whole"].items():
        torch.testing.assert_close(weights["micro"][key], value, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(weights["two"][key], value, atol=2e-5, rtol=1e-4)
