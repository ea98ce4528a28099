"""The study of when DSKD helps: overlays, condition configs, the comparisons and the table, and a real study of
two micro conditions through the workflow."""
import subprocess
import sys

import pytest
import yaml
from test_tables import _write_cell

from conftest import REPO
from repro import grid, study
from repro.schema import ConfigError, load_yaml


def test_merge_replaces_only_what_the_overlay_names():
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "f": [1, 2]}
    merged = study.merge(base, {"a": {"c": {"d": 9}}, "f": [3], "g": True})
    assert merged == {"a": {"b": 1, "c": {"d": 9, "e": 3}}, "f": [3], "g": True}
    assert base["a"]["c"]["d"] == 2  # the base is not touched


def test_every_condition_of_the_study_config_is_a_valid_grid():
    config = load_yaml(REPO / "config" / "study.yaml")
    study.validate_study(config)
    for name, overlay in config["study"]["conditions"].items():
        condition = study.condition_config(config, name)
        assert list(condition["pairs"]) == ["gpt2"] and condition["divergences"] == ["kl", "js"]
        assert condition["results_dir"] == f"results-study/{name}/results"
        assert [c.id for c in grid.cells(condition)] == ["gpt2/teacher", "gpt2/sft", "gpt2/kd-kl", "gpt2/kd-js",
                                                          "gpt2/dskd-kl", "gpt2/dskd-js"]
        assert len(grid.runs(condition)) == 1 + 5 * 3 and condition["ablation"] == []
    wider = study.condition_config(config, "wider_gap")["models"]["gpt2_teacher"]
    assert (wider["layers"], wider["hidden"], wider["arch"]) == (4, 128, "gpt2")  # merged, not replaced
    assert study.condition_config(config, "default")["pretraining"]["enabled"] is True
    assert study.condition_config(config, "random_init")["pretraining"]["enabled"] is False
    assert study.condition_config(config, "weaker_teacher")["pairs"]["gpt2"]["teacher_training"] == {
        "lr": 2.0e-3, "epochs": 5}
    assert study.condition_config(config, "projector_half")["pairs"]["gpt2"]["student_training"] == {
        "lr": 2.0e-3, "epochs": 4, "projector_lr": 1.0e-3}


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(extra=1), r"unknown keys \['extra'\]"),
    (lambda s: s.pop("seeds"), r"missing keys \['seeds'\]"),
    (lambda s: s.update(conditions={}), "non-empty mapping"),
    (lambda s: s.update(conditions={"bad": [1]}), "study.conditions.bad': expected a mapping"),
    (lambda s: s.update(pairs=["nope"]), r"'study.pairs': \['nope'\] are not pairs"),
    (lambda s: s.update(conditions={"small": {"data": {"n_train": 320}}}),
     "config key 'data.n_train': data.n_train=320 is too small for data.n_people=40"),
    (lambda s: s.update(conditions={"typo": {"training": {"bach_size": 4}}}),
     "study condition 'typo': invalid configuration:\n  config key 'training.bach_size' is unknown"),
])
def test_bad_study_configs_name_the_key(change, message):
    config = load_yaml(REPO / "config" / "study.yaml")
    change(config["study"])
    with pytest.raises(ConfigError, match=message):
        study.validate_study(config)


def test_comparisons_and_table_of_a_finished_condition(tmp_path):
    config = load_yaml(REPO / "config" / "study.yaml")
    config["study"]["results_dir"] = str(tmp_path)
    condition = study.condition_config(config, "random_init")
    condition["evaluation"]["seeds"] = [10, 20]
    for cell in grid.cells(condition):
        base = {"teacher": 40.0, "sft": 20.0}.get(cell.method if cell.role == "student" else "teacher", 21.0)
        _write_cell(condition, cell, base + (1.0 if cell.method == "dskd" else 0.0))
    rows = study.compare(condition)
    by = {(r["comparison"], r["divergence"]): r for r in rows}
    assert by[("teacher - SFT", "")]["delta"] == 20.0 and by[("teacher - SFT", "")]["runs"] == [1, 3]
    assert by[("DSKD - KD", "kl")]["delta"] == pytest.approx(1.0) and by[("KD - SFT", "js")]["delta"] == 1.0
    table = study.study_table({"random_init": rows})
    assert "| random_init | gpt2 | KL | +20.00 [+20.00, +20.00] | +1.00 [+1.00, +1.00] |" in table


@pytest.mark.slow
def test_a_micro_study_runs_end_to_end(tmp_path):
    """Two conditions on the micro grid, each trained by a workflow of its own, then the study notebook."""
    spec = {"study": {"base": "config/micro.yaml", "results_dir": "study", "pairs": ["gpt2"],
                      "divergences": ["kl"], "seeds": [10, 20],
                      "conditions": {"base": {}, "slow_projector": {"pairs": {"gpt2": {"student_training": {
                          "projector_lr": 1.0e-4}}}}}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                           "--configfile", str(path), "--directory", str(tmp_path)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "study" / "study.md").read_text()
    assert table.count("| gpt2 | KL |") == 2 and "| base |" in table and "| slow_projector |" in table
    assert (tmp_path / "study" / "study.png").stat().st_size > 1000 and (tmp_path / "study" / "study.html").exists()
    for name in ("base", "slow_projector"):
        runs = tmp_path / "study" / name / "results" / "runs" / "gpt2"
        assert sorted(p.name for p in (runs / "dskd-kl").iterdir()) == ["seed10", "seed20"]
        assert (tmp_path / "study" / name / "config.yaml").exists()
    assert "Nothing to be done" in subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--configfile", str(path),
         "--directory", str(tmp_path)], capture_output=True, text=True).stdout
