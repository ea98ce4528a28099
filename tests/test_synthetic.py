import pytest

from conftest import SMALL_SIZES
from repro.data import load_examples
from repro.prompts import build_prompt
from repro.synthetic import TEST_SETS, generate, write_splits


def test_deterministic_in_seed():
    a = generate(**SMALL_SIZES)
    b = generate(**SMALL_SIZES)
    c = generate(**{**SMALL_SIZES, "seed": SMALL_SIZES["seed"] + 1})
    assert a == b
    assert a["train"] != c["train"]


def test_split_sizes(small_splits):
    assert len(small_splits["train"]) == SMALL_SIZES["n_train"]
    assert len(small_splits["dev"]) == SMALL_SIZES["n_dev"]
    for name in TEST_SETS:
        assert len(small_splits[f"test/{name}"]) == SMALL_SIZES["n_test"][name]


def test_fields_and_prompt_template(small_splits):
    for split, rows in small_splits.items():
        for row in rows:
            assert set(row) == {"instruction", "input", "output", "prompt", "family"}, split
            assert row["prompt"] == build_prompt(row["instruction"], row["input"])
            assert row["prompt"].endswith("### Response:\n")
            outputs = row["output"] if isinstance(row["output"], list) else [row["output"]]
            assert outputs and all(isinstance(o, str) and o for o in outputs)


def test_splits_are_disjoint(small_splits):
    seen = {}
    for split, rows in small_splits.items():
        for row in rows:
            key = (row["instruction"], row["input"])
            assert key not in seen or seen[key] == split, f"{key} in {seen.get(key)} and {split}"
            seen[key] = split
    # and no duplicate within a split either
    for split, rows in small_splits.items():
        assert len({(r["instruction"], r["input"]) for r in rows}) == len(rows), split


def test_test_set_roles(small_splits):
    train_instructions = {r["instruction"] for r in small_splits["train"]}
    assert all(isinstance(r["output"], list) and len(r["output"]) >= 2 for r in small_splits["test/sni"])
    assert all(r["input"] for r in small_splits["test/sni"])
    assert all(isinstance(r["output"], list) for r in small_splits["test/unni"])
    assert {r["family"] for r in small_splits["test/unni"]} == {"unseen"}
    # SelfInst phrasings never occur in training
    assert not {r["instruction"] for r in small_splits["test/selfinst"]} & train_instructions
    # VicunaEval answers are long
    mean_words = sum(len(r["output"].split()) for r in small_splits["test/vicuna"]) / SMALL_SIZES["n_test"]["vicuna"]
    assert mean_words > 20


def test_held_out_facts_are_taught_in_training(small_splits):
    """A fact asked in dev or the Dolly-role set is answered, with the same answer, by some training example."""
    train_outputs = {r["output"] for r in small_splits["train"] if r["family"] == "fact"}
    held = [r for s in ("dev", "test/dolly") for r in small_splits[s] if r["family"] == "fact"]
    assert held
    assert all(r["output"] in train_outputs for r in held)


def test_written_files_load_back(small_splits, tmp_path):
    paths = write_splits(small_splits, tmp_path)
    for name, path in paths.items():
        assert load_examples(path) == small_splits[name]


@pytest.mark.parametrize("bad, message", [
    ({"n_test": {"dolly": 1}}, "n_test"),
    ({"n_people": 2}, "n_people"),
    ({"n_train": 50}, "n_train"),
])
def test_bad_sizes_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        generate(**{**SMALL_SIZES, **bad})


def test_held_out_phrasings_recombine_familiar_parts():
    """Every SelfInst phrasing is unseen as a whole, but its core question and its style both occur in training."""
    from repro.synthetic import ATTRIBUTES, FACT_CORES, STYLES, phrasings

    for g, attr in enumerate(ATTRIBUTES):
        train = phrasings(FACT_CORES[attr], g, held_out=False)
        held = phrasings(FACT_CORES[attr], g, held_out=True)
        assert held and not set(held) & set(train)
        assert len(train) + len(held) == len(FACT_CORES[attr]) * len(STYLES)
        for core in FACT_CORES[attr]:
            assert any(core in t for t in train)
        for style in STYLES:
            assert any(t == style.format(q=core) for core in FACT_CORES[attr] for t in train)


@pytest.mark.parametrize("name, most", [("selfinst", 3 * 5 * 7), ("vicuna", 15 * 4), ("sni", 5 * 2 * 7)])
def test_each_test_set_can_hold_exactly_its_stated_number_of_distinct_questions(name, most):
    """``check_sizes`` states how many distinct questions a set can ask; the generator draws exactly that many, and
    one more is refused before anything is drawn, naming the key."""
    from repro.synthetic import check_sizes

    sizes = {"n_people": 7, "n_train": 300, "n_dev": 10,
             "n_test": {"dolly": 5, "selfinst": 5, "vicuna": 5, "sni": 5, "unni": 5}}
    full = {**sizes, "n_test": {**sizes["n_test"], name: most}}
    assert check_sizes(**full) is None
    splits = generate(seed=3, **full)
    assert len({(r["instruction"], r["input"]) for r in splits[f"test/{name}"]}) == most
    over = {**sizes, "n_test": {**sizes["n_test"], name: most + 1}}
    assert f"data.n_test.{name}={most + 1}" in check_sizes(**over)
    with pytest.raises(ValueError, match=f"n_test.{name}"):
        generate(seed=3, **over)
