from conftest import REPO
from repro import grid
from repro.config import load_config


def test_default_grid_cells():
    config = load_config(REPO / "config" / "config.yaml")
    ids = [c.id for c in grid.cells(config)]
    assert ids == ["gpt2/teacher", "gpt2/sft", "gpt2/kd-kl", "gpt2/dskd-kl"]
    kd = grid.find_cell(config, "gpt2", "kd-kl")
    assert kd.needs_teacher and kd.title == "KD (KL)"
    params = grid.cell_params(config, kd, threads=2)
    assert params["teacher"].endswith("runs/gpt2/teacher/model")
    assert params["model"].endswith("models/base/gpt2_student")
    assert params["training"]["lr"] == config["pairs"]["gpt2"]["student_training"]["lr"]
    assert params["training"]["dev_seeds"] == config["evaluation"]["dev_seeds"]
    assert "dev_seeds" not in params["evaluation"]
    teacher = grid.find_cell(config, "gpt2", "teacher")
    assert not teacher.needs_teacher and grid.cell_params(config, teacher)["teacher"] == ""
    assert [p.name for p in grid.table_files(config)] == ["table1.md", "table1.csv"]


def test_hub_models_are_not_built():
    config = load_config(REPO / "config" / "config.yaml")
    config["models"]["gpt2_teacher"] = {"id": "gpt2-xl"}
    assert "gpt2_teacher" not in grid.built_models(config) and "gpt2_student" in grid.built_models(config)
    assert grid.model_source(config, "gpt2_teacher") == "gpt2-xl"


def test_cell_config_rejects_inconsistent_parameters():
    import pytest

    from repro.cells import CellConfig

    config = load_config(REPO / "config" / "config.yaml")
    params = grid.cell_params(config, grid.find_cell(config, "gpt2", "kd-kl"))
    CellConfig(**params)
    for change, message in [({"teacher": ""}, "needs a teacher checkpoint"),
                            ({"divergence": ""}, "needs a divergence"),
                            ({"role": "assistant"}, "role must be"),
                            ({"method": "magic"}, "unknown method 'magic'"),
                            ({"evaluation": {**params["evaluation"], "beam": 4}}, "unknown evaluation keys"),
                            ({"evaluation": {**params["evaluation"], "seeds": []}}, "at least one sampling seed")]:
        with pytest.raises(ValueError, match=message):
            CellConfig(**{**params, **change})
    with pytest.raises(TypeError):
        CellConfig(**{**params, "learning_rate": 1.0})
