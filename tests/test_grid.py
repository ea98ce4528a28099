import pytest

from conftest import REPO
from repro import grid
from repro.validation import load_config


def test_default_grid_cells():
    config = load_config(REPO / "config" / "config.yaml")
    ids = [c.id for c in grid.cells(config)]
    divergences = ["kl", "rkl", "js", "skl", "srkl", "akl"]
    assert len(ids) == 54 and ids[:4] == ["gpt2/teacher", "gpt2/sft", "gpt2/kd-kl", "gpt2/kd-rkl"]
    assert [i for i in ids if i.startswith("qwen_gpt2/")] == (
        ["qwen_gpt2/teacher", "qwen_gpt2/seqkd", "qwen_gpt2/mined", "qwen_gpt2/uld"]
        + [f"qwen_gpt2/dskd_cma-{d}" for d in divergences])
    assert sum(i.startswith("llama/") for i in ids) == 14 and sum(i.startswith("mistral_tinyllama/") for i in ids) == 10
    # Tables 1-2 leave out the ablation rows; Table 3 is the ablation, per divergence
    assert [c.id for c in grid.table_cells(config, 3)][:3] == ["gpt2/kd-kl", "gpt2/dskd_student_space-kl",
                                                               "gpt2/dskd-kl"]
    assert len(grid.table_cells(config, 3)) == 18
    assert not any(c.method == "dskd_student_space" for c in grid.table_cells(config, 1))
    assert len(grid.table_cells(config, 1)) == 14 + 10 and len(grid.table_cells(config, 2)) == 14 + 10
    assert grid.sft_cell(config, "mistral_tinyllama") == grid.Cell("llama", "sft")
    kd = grid.find_cell(config, "gpt2", "kd-kl")
    assert kd.needs_teacher and kd.title == "KD (KL)"
    with pytest.raises(ValueError, match="gpt2/kd-kl is a table row, not a run"):
        grid.cell_params(config, kd)
    params = grid.cell_params(config, kd.with_seed(20), threads=2)
    assert params["teacher"].endswith("runs/gpt2/teacher/seed10/model")  # one teacher run, the first seed
    assert params["out_dir"].endswith("runs/gpt2/kd-kl/seed20") and params["cell_id"] == "gpt2/kd-kl/seed20"
    assert params["training"]["seed"] == 20 and "seeds" not in params["training"]
    assert params["model"].endswith("models/pretrained/gpt2_student")  # pretraining is on by default
    assert params["training"]["lr"] == config["pairs"]["gpt2"]["student_training"]["lr"]
    assert params["training"]["dev_seeds"] == config["evaluation"]["dev_seeds"]
    assert "dev_seeds" not in params["evaluation"]
    teacher = grid.find_cell(config, "gpt2", "teacher")
    assert not teacher.needs_teacher and grid.cell_params(config, teacher.with_seed(10))["teacher"] is None
    names = [p.name for p in grid.table_files(config)]
    assert names == [f"table{n}.{e}" for n in (1, 2, 3) for e in ("md", "tex", "csv")]


def test_training_seeds_expand_into_runs():
    """Every student row is one run per training seed, the teacher row one run (the first seed)."""
    config = load_config(REPO / "config" / "config.yaml")
    config["training"]["seeds"] = [10, 20, 30]
    rows, runs = grid.cells(config), grid.runs(config)
    teachers = sum(c.role == "teacher" for c in rows)
    assert len(runs) == teachers + 3 * (len(rows) - teachers) == 4 + 3 * 50
    assert [r.run_id for r in grid.cell_runs(config, grid.find_cell(config, "gpt2", "kd-kl"))] == [
        "gpt2/kd-kl/seed10", "gpt2/kd-kl/seed20", "gpt2/kd-kl/seed30"]
    assert [r.run_id for r in grid.cell_runs(config, grid.find_cell(config, "gpt2", "teacher"))] == [
        "gpt2/teacher/seed10"]
    assert len({grid.run_dir(config, r) for r in runs}) == len(runs)  # a folder of its own for every run
    assert grid.find_run(config, "gpt2", "sft", 30).row == grid.Cell("gpt2", "sft")
    with pytest.raises(KeyError, match="no run of gpt2/teacher with training seed 20"):
        grid.find_run(config, "gpt2", "teacher", 20)
    config["training"]["seeds"] = [7]
    assert len(grid.runs(config)) == len(rows)
    assert grid.cell_training(config, grid.Cell("gpt2", "sft"))["seed"] == 7


def test_hub_models_are_not_built():
    config = load_config(REPO / "config" / "config.yaml")
    config["models"]["gpt2_teacher"] = {"id": "gpt2-xl"}
    assert "gpt2_teacher" not in grid.built_models(config) and "gpt2_student" in grid.built_models(config)
    assert grid.model_source(config, "gpt2_teacher") == "gpt2-xl"


def test_cell_config_rejects_inconsistent_parameters():
    import pytest

    from repro.cells import CellConfig

    config = load_config(REPO / "config" / "config.yaml")
    params = grid.cell_params(config, grid.find_run(config, "gpt2", "kd-kl", 10))
    CellConfig(**params)
    for change, message in [({"teacher": None}, "needs a teacher checkpoint"),
                            ({"divergence": None}, "needs a divergence"),
                            ({"divergence": ""}, "divergence must be one of"),
                            ({"role": "assistant"}, "role must be"),
                            ({"method": "magic"}, "unknown method 'magic'"),
                            ({"evaluation": {**params["evaluation"], "beam": 4}}, "unknown evaluation keys"),
                            ({"evaluation": {**params["evaluation"], "seeds": []}}, "at least one sampling seed")]:
        with pytest.raises(ValueError, match=message):
            CellConfig(**{**params, **change})
    with pytest.raises(TypeError):
        CellConfig(**{**params, "learning_rate": 1.0})
