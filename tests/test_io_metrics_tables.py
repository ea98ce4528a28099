import pytest

from repro.io import atomic_path, read_json, write_json
from repro.metrics import mean_std, rouge_l


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_folder_replaces_old_content(tmp_path):
    target = tmp_path / "model"
    for content in ("old", "new"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / content).write_text(content)
    assert [p.name for p in target.iterdir()] == ["new"]


def test_read_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(ValueError, match="broken.json: invalid JSON"):
        read_json(path)


def test_rouge_l():
    assert rouge_l("the cat sat", ["the cat sat"]) == pytest.approx(100.0)
    assert rouge_l("", ["the cat sat"]) == 0.0
    # stemming on, max over references
    assert rouge_l("cats sitting", ["dogs", "cat sits"]) == pytest.approx(100.0)
    # LCS 2 of 3 tokens, both sides: P = R = 2/3
    assert rouge_l("a b d", ["a b c"]) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError):
        rouge_l("x", [])


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0}


def _fake_scores(cell_id, base):
    sets = {t: {"mean": base + i, "std": 0.5, "per_seed": {"10": base + i}, "n": 3}
            for i, t in enumerate(["dolly", "selfinst", "vicuna", "sni", "unni"])}
    return {"cell": cell_id, "test_sets": sets, "avg": {"mean": base + 2, "std": 0.1}, "best_dev_rougeL": base}


def test_tables_from_scores(tmp_path):
    from conftest import REPO
    from repro import grid, tables
    from repro.config import load_config

    config = load_config(REPO / "config" / "config.yaml")
    config["results_dir"] = str(tmp_path)
    cells = grid.cells(config)
    with pytest.raises(FileNotFoundError, match="cell gpt2/teacher has no scores yet"):
        tables.write_tables(config)
    for k, cell in enumerate(cells):
        best_dev = {"best_dev_rougeL": 99.0} if cell.role == "teacher" else {}
        write_json(grid.scores_file(config, cell), _fake_scores(cell.id, 10.0 * (k + 1)) | best_dev)
    paths = tables.write_tables(config)
    assert [p.name for p in paths] == ["table1.md", "table1.csv"]
    md = paths[0].read_text().splitlines()
    assert md[2] == "| Pair | Method | Dolly | SelfInst | VicunaEval | S-NI | UnNI | Avg |"
    assert md[4] == "| gpt2_teacher -> gpt2_student | Teacher (SFT) | 10.00 | 11.00 | 12.00 | 13.00 | 14.00 | 12.00 |"
    assert md[6].startswith("| gpt2_teacher -> gpt2_student | KD (KL) | 30.00")
    csv_lines = paths[1].read_text().splitlines()
    assert csv_lines[0].startswith("pair,teacher,student,row,cell,dolly,dolly_std")
    assert len(csv_lines) == 1 + len(cells)
    assert "WARNING" not in paths[0].read_text()
    # the teacher quality gate: a teacher below the student SFT on dev is flagged loudly
    write_json(grid.scores_file(config, cells[0]), _fake_scores(cells[0].id, 100.0) | {"best_dev_rougeL": 5.0})
    tables.write_tables(config)
    assert "WARNING: the teacher of pair 'gpt2' (gpt2_teacher) does not beat the student SFT baseline on the dev " \
           "set: dev Rouge-L 5.00 <= 20.00" in paths[0].read_text()
