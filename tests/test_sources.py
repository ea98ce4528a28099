"""Real-data loaders: processed folders, databricks-dolly-15k processing, the real files of ../shared."""
import json

import pytest
from corpus import DATA_CASES, build_data_case, data_config

from conftest import REPO, SHARED
from repro import grid
from repro.config import run_check
from repro.data import load_examples, read_examples, references
from repro.io import read_json
from repro.schema import ConfigError
from repro.sources import PROCESSED_LAYOUT, import_real_data, process_dolly
from repro.validation import validate_config

MINILLM = SHARED / "data" / "minillm"
# Rows of each real file, as ../shared/data/README.md lists them.
REAL_ROWS = {"dolly/dev.jsonl": 1000, "dolly/test.jsonl": 500, "self-inst/test.jsonl": 242,
             "vicuna/test.jsonl": 80, "sinst/11_/test.jsonl": 1694}


def _row(i: int, output="an answer") -> dict:
    return {"instruction": f"Question {i}?", "input": "", "output": output}


def _processed_folder(root, n=5, bad_line=None):
    for split, rel in PROCESSED_LAYOUT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(_row(i, ["a", "b"] if split == "sni" else f"answer {i}")) for i in range(n)]
        if bad_line is not None and split == "vicuna":
            lines.insert(bad_line - 1, json.dumps({"instruction": "No output."}))
        path.write_text("\n".join(lines) + "\n")
    return root


def _config(tmp_path, data: dict) -> dict:
    from repro.schema import load_yaml

    config = load_yaml(REPO / "config" / "micro.yaml")
    config["results_dir"] = str(tmp_path / "results")
    config["data"] = data
    return validate_config(config)


def test_processed_folder_is_checked_and_written_to_the_cell_layout(tmp_path):
    folder = _processed_folder(tmp_path / "minillm")
    config = _config(tmp_path, {"source": "processed", "path": str(folder), "limits": {"unni": 3}})
    report = import_real_data(config)
    assert {s: r["rows"] for s, r in report.items()} == {**{s: 5 for s in PROCESSED_LAYOUT}, "unni": 3}
    for path in grid.data_files(config):
        assert load_examples(path)
    sni = load_examples(grid.data_dir(config) / "test" / "sni.jsonl")
    assert references(sni[0]) == ["a", "b"] and sni[0]["prompt"].endswith("### Response:\n")
    assert read_json(grid.data_dir(config) / "sources.json")["unni"]["rows"] == 3


def test_a_malformed_row_stops_the_import_unless_skipping_is_asked_for(tmp_path):
    folder = _processed_folder(tmp_path / "minillm", bad_line=3)
    config = _config(tmp_path, {"source": "processed", "path": str(folder)})
    with pytest.raises(ValueError, match=r"vicuna/test.jsonl, line 3: missing field 'output'"):
        import_real_data(config)
    config["data"]["skip_malformed"] = True
    report = import_real_data(config)
    assert report["vicuna"]["rows"] == 5 and report["vicuna"]["skipped"] == 1
    problems = report["vicuna"]["problems"]
    assert len(problems) == 1 and "line 3: missing field 'output'" in problems[0]
    assert all(r["skipped"] == 0 for s, r in report.items() if s != "vicuna")


def test_a_missing_processed_file_names_the_key_to_set(tmp_path):
    folder = _processed_folder(tmp_path / "minillm")
    (folder / PROCESSED_LAYOUT["unni"]).unlink()
    config = _config(tmp_path, {"source": "processed", "path": str(folder)})
    with pytest.raises(FileNotFoundError, match=r"uinst/11_/test.jsonl.*data.files.unni"):
        import_real_data(config)
    config["data"]["files"] = {"unni": PROCESSED_LAYOUT["sni"]}
    assert import_real_data(config)["unni"]["rows"] == 5


def test_real_data_sources_need_a_path(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'data': 'path' is a required property"):
        _config(tmp_path, {"source": "processed"})
    with pytest.raises(ConfigError, match=r"'n_people' is a required property"):
        _config(tmp_path, {"source": "synthetic", "seed": 1})


def _dolly_records(n):
    records = [{"instruction": f"Tell me fact {i}.", "context": "" if i % 2 else f"Some context {i}.",
                "response": f"Fact {i} is true.", "category": "open_qa" if i % 2 else "closed_qa"}
               for i in range(n)]
    records[3]["context"] = "long " * 400  # a prompt beyond the length filter
    records[5]["response"] = "  "  # an empty response
    return records


def test_dolly_processing_template_filter_and_seeded_split():
    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    splits, report = process_dolly(_dolly_records(40), words, 256, dev_size=10, test_size=5, seed=42)
    assert report["prompt_too_long"] == 1 and report["empty_response"] == 1 and report["kept"] == 38
    assert [len(splits[s]) for s in ("dev", "dolly", "train")] == [10, 5, 23]
    rows = splits["dev"] + splits["dolly"] + splits["train"]
    assert len({r["instruction"] for r in rows}) == 38
    with_context = next(r for r in rows if r["input"])
    assert "### Input:\n" + with_context["input"] in with_context["prompt"]
    assert all(words(r["prompt"]) <= 256 for r in rows)
    again, _ = process_dolly(_dolly_records(40), words, 256, dev_size=10, test_size=5, seed=42)
    other, _ = process_dolly(_dolly_records(40), words, 256, dev_size=10, test_size=5, seed=7)
    assert again == splits and other != splits
    with pytest.raises(ValueError, match="fewer than dev_size"):
        process_dolly(_dolly_records(10), words, 256, dev_size=10, test_size=5, seed=42)
    with pytest.raises(ValueError, match=r"dolly record 0: field 'response'"):
        process_dolly([{"instruction": "x", "context": ""}], words, 256, 1, 1, 0)


def test_hub_source_processes_dolly_and_takes_the_other_test_sets_from_the_folder(tmp_path, trained_tokenizers):
    """The hub path end to end, offline: ``data.hub.id`` may name a local file that ``datasets`` reads."""
    raw = tmp_path / "dolly.jsonl"
    raw.write_text("\n".join(json.dumps(r) for r in _dolly_records(60)) + "\n")
    folder = _processed_folder(tmp_path / "minillm")
    config = _config(tmp_path, {"source": "hub", "path": str(folder), "hub": {
        "id": str(raw), "dev_size": 10, "test_size": 8, "length_tokenizer": str(trained_tokenizers["gpt2"])}})
    report = import_real_data(config)
    assert report["hub"]["train_rows"] == 40 and report["hub"]["prompt_too_long"] == 1
    counts = {p.name: len(load_examples(p)) for p in grid.data_files(config)}
    assert counts == {"train.jsonl": 40, "dev.jsonl": 10, "dolly.jsonl": 8, "selfinst.jsonl": 5,
                      "vicuna.jsonl": 5, "sni.jsonl": 5, "unni.jsonl": 5}


@pytest.mark.skipif(not MINILLM.is_dir(), reason="../shared/data/minillm is absent")
def test_every_real_processed_file_loads_without_a_malformed_row():
    files = sorted(MINILLM.rglob("*.jsonl"))
    assert {str(f.relative_to(MINILLM)) for f in files} >= set(REAL_ROWS)
    for path in files:
        rows, skipped = read_examples(path)
        assert skipped == [] and all(references(r) for r in rows)
        expected = REAL_ROWS.get(str(path.relative_to(MINILLM)))
        assert expected is None or len(rows) == expected, path


@pytest.mark.skipif(not MINILLM.is_dir(), reason="../shared/data/minillm is absent")
def test_the_real_folder_imports_through_the_config(tmp_path):
    """The processed-folder source on the real files (train and UnNI are not in ../shared: borrowed paths)."""
    config = _config(tmp_path, {"source": "processed", "path": str(MINILLM),
                                "files": {"train": "dolly/dev.jsonl", "unni": "sinst/11_/test.jsonl"},
                                "limits": {"unni": 100}})
    report = import_real_data(config)
    assert report["dolly"]["rows"] == 500 and report["sni"]["rows"] == 1694 and report["unni"]["rows"] == 100
    assert all(r["skipped"] == 0 for r in report.values())


@pytest.mark.skipif(not (SHARED / "tokenizers" / "gpt2").is_dir(), reason="../shared/tokenizers is absent")
@pytest.mark.skipif(not MINILLM.is_dir(), reason="../shared/data/minillm is absent")
def test_released_dolly_prompts_pass_our_length_filter():
    """The released dev/test files were filtered at 256 GPT-2 prompt tokens, the default of the hub processing."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(SHARED / "tokenizers" / "gpt2")
    for name in ("dev", "test"):
        rows = load_examples(MINILLM / "dolly" / f"{name}.jsonl")
        assert max(len(tok(r["prompt"])["input_ids"]) for r in rows) <= 256


def _standard_json(name):
    raise AssertionError(f"{name} written into the imported data")


@pytest.mark.parametrize("case", DATA_CASES, ids=[c["name"] for c in DATA_CASES])
def test_a_corrupted_data_folder_stops_with_its_file_and_line_or_is_accepted_with_a_warning(case, tmp_path,
                                                                                          monkeypatch):
    """The corpus of tests/data/bad_data.yaml: a fault stops the check before the first job (``run_check``) and the
    import alike, in one line naming its file (and line); what is accepted imports standard JSON, and a warning is
    returned by the check and recorded in data/sources.json."""
    work = tmp_path / "work"
    work.mkdir()
    build_data_case(case, work)
    monkeypatch.chdir(work)
    config = validate_config(data_config(case))
    problems, warnings = run_check(config)
    assert all("\n" not in line for line in problems + warnings)
    sources = work / "results" / "data" / "sources.json"
    if "expect" in case:
        assert [p for p in problems if case["expect"] in p], problems
        with pytest.raises((ValueError, FileNotFoundError)) as info:
            import_real_data(config)
        assert case["expect"] in str(info.value) and "\n" not in str(info.value)
        assert not sources.exists()
        return
    assert problems == []
    report = import_real_data(config)
    assert report[case.get("file", "train")]["rows"] == case["rows"]
    recorded = [w for entry in read_json(sources).values() for w in entry["warnings"]]
    if "warning" in case:
        assert [w for w in warnings if case["warning"] in w] and [w for w in recorded if case["warning"] in w], \
            (warnings, recorded)
    else:
        assert warnings == [] and recorded == []
    for path in grid.data_files(config):
        for line in path.read_text(encoding="utf-8").splitlines():
            assert isinstance(json.loads(line, parse_constant=_standard_json), dict)
