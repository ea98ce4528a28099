import json

import pytest

from conftest import SHARED
from repro.data import IGNORE, collate, encode_dataset, encode_example, load_examples, references
from repro.vocab import load_tokenizer


@pytest.fixture(scope="module")
def tok(trained_tokenizers):
    return load_tokenizer(trained_tokenizers["llama"])


def test_labels_are_the_shifted_response_plus_eos(tok, small_splits):
    row = small_splits["train"][0]
    enc = encode_example(row, tok, max_length=512, max_prompt_length=256)
    prompt = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    response = tok(row["output"], add_special_tokens=False)["input_ids"]
    full = prompt + response + [tok.eos_token_id]
    assert enc.input_ids == full[:-1]
    assert len(enc.labels) == len(enc.input_ids)
    assert enc.labels == [IGNORE] * (len(prompt) - 1) + response + [tok.eos_token_id]
    assert tok.bos_token_id not in enc.input_ids  # no BOS for any model


def test_truncation(tok, small_splits):
    row = small_splits["train"][0]
    enc = encode_example(row, tok, max_length=512, max_prompt_length=5)
    assert enc.labels[:4] == [IGNORE] * 4 and enc.labels[4] != IGNORE
    enc = encode_example(row, tok, max_length=8, max_prompt_length=5)
    assert len(enc.input_ids) == len(enc.labels) == 8
    with pytest.raises(ValueError, match="no response token fits"):
        encode_dataset([row], tok, max_length=4, max_prompt_length=256)


def test_collate_pads_right_and_masks(tok, small_splits):
    encoded = encode_dataset(small_splits["train"][:3], tok, 512, 256)
    batch = collate(encoded, tok.pad_token_id)
    width = max(len(e.input_ids) for e in encoded)
    assert batch["input_ids"].shape == batch["labels"].shape == (3, width)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][i, n:].eq(IGNORE).all()


def test_load_examples_reports_file_and_line(tmp_path):
    good = {"instruction": "Say hi.", "input": "", "output": "hi", "prompt": "P"}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: invalid JSON"):
        load_examples(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "output": 3}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: field 'output'"):
        load_examples(path)
    path.write_text(json.dumps({"input": "", "output": "x", "prompt": "P"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1: missing field 'instruction'"):
        load_examples(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match=r"d.jsonl: no examples; expected one JSON object per line"):
        load_examples(path)


def test_bad_bytes_empty_prompts_and_empty_files_are_named(tmp_path):
    from repro.data import read_examples

    good = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi", "prompt": "P"})
    path = tmp_path / "d.jsonl"
    path.write_bytes(good.encode() + b"\n" + b'{"instruction": "caf\xe9"}\n' + good.encode() + b"\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: not UTF-8 \(byte 0xe9 at column 21\)"):
        read_examples(path)
    rows, skipped = read_examples(path, skip_malformed=True)  # skippable like any malformed row
    assert len(rows) == 2 and skipped == [f"{path}, line 2: not UTF-8 (byte 0xe9 at column 21)"]
    path.write_text(good + "\n" + json.dumps({"instruction": "x", "input": "", "output": "y", "prompt": " "}) + "\n")
    with pytest.raises(ValueError, match=r"line 2: empty prompt in field 'prompt'"):
        read_examples(path)
    path.write_text("")
    with pytest.raises(ValueError, match=r"d.jsonl: no examples"):
        read_examples(path)
    path.write_text("{broken\n[1]\n")  # wholly malformed: an error even when skipping
    with pytest.raises(ValueError, match=r"no examples \(2 malformed rows skipped, first: .*line 1: invalid JSON"):
        read_examples(path, skip_malformed=True)


def test_missing_prompt_is_built_with_the_template(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "Add.", "input": "1, 2", "output": ["3", "three"]}) + "\n")
    (row,) = load_examples(path)
    assert row["prompt"].endswith("### Input:\n1, 2\n\n### Response:\n")
    assert references(row) == ["3", "three"]


@pytest.mark.skipif(not (SHARED / "data" / "minillm").is_dir(), reason="../shared/data is absent")
@pytest.mark.parametrize("name, rows", [("dolly/test.jsonl", 500), ("self-inst/test.jsonl", 242),
                                        ("vicuna/test.jsonl", 80), ("sinst/11_/test.jsonl", 1694)])
def test_real_processed_files_load(name, rows):
    examples = load_examples(SHARED / "data" / "minillm" / name)
    assert len(examples) == rows
    assert all(references(r) for r in examples)


def test_malformed_rows_stop_or_are_skipped_and_counted(tmp_path):
    from repro.data import read_examples

    good = {"instruction": "Say hi.", "input": "", "output": "hi", "prompt": "P"}
    lines = [json.dumps(good), "{broken", json.dumps({**good, "output": " "}),
             json.dumps({**good, "output": ["a", ""]}), json.dumps([1, 2]), json.dumps({**good, "instruction": 3}),
             json.dumps(good)]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: invalid JSON"):
        read_examples(path)
    rows, skipped = read_examples(path, skip_malformed=True)
    assert len(rows) == 2 and len(skipped) == 5
    assert [s.split(": ", 1)[0].rsplit("line ", 1)[1] for s in skipped] == ["2", "3", "4", "5", "6"]
    assert "empty response" in skipped[1] and "expected a JSON object" in skipped[3]
    assert len(load_examples(path, skip_malformed=True)) == 2


def test_the_row_check_catches_what_would_fail_later_and_accepts_what_is_harmless(tmp_path):
    """Lone surrogates and NaN stop the file at their line (skippable like any malformed row); a byte-order mark at
    the start of the file, CRLF line ends and extra keys are read as they are; a key given twice is recorded."""
    from repro.rows import scan_examples

    good = json.dumps({"instruction": "Say hi.", "input": "", "output": "hi", "prompt": "P"})
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\r\n" + good.replace('"P"}', '"P", "output": "hey", "x": 1}')
                     .encode() + b"\r\n")
    scan = scan_examples(path)
    assert [r["output"] for r in scan.rows] == ["hi", "hey"] and scan.lines == [1, 2] and scan.twice == [(2, "output")]
    path.write_text(good + "\n" + good.replace('"hi"', '"h\\udc00i"') + "\n" + good.replace('"P"}', '"P", "w": NaN}')
                    + "\n\ufeff" + good + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl, line 2: field 'output' holds text that UTF-8 cannot encode "
                                         r"\(surrogates not allowed: '\\udc00' at character 2\)"):
        scan_examples(path)
    scan = scan_examples(path, skip_malformed=True)
    assert len(scan.rows) == 1 and [s.split(": ", 1)[0].rsplit(" ", 1)[1] for s in scan.skipped] == ["2", "3", "4"]
    assert "NaN is not valid JSON" in scan.skipped[1] and "invalid JSON" in scan.skipped[2]  # a BOM only at the start
