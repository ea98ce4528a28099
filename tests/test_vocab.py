import pytest

from conftest import SHARED
from repro.vocab import load_tokenizer, train_tokenizer

TEXT = "Below is an instruction.\n\n### Response:\nBralin is 42 years old, and 42 plus 7 equals 49."


@pytest.mark.parametrize("name", ["gpt2", "qwen", "llama", "mistral"])
def test_round_trip_through_auto_tokenizer(trained_tokenizers, name):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained_tokenizers[name]))
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXT
    assert tok.eos_token_id is not None
    assert len(tok) <= {"gpt2": 400, "qwen": 450, "llama": 420, "mistral": 480}[name]


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_sentencepiece_kind(trained_tokenizers, name):
    tok = load_tokenizer(trained_tokenizers[name])
    pieces = tok.convert_ids_to_tokens(tok("apple pie", add_special_tokens=False)["input_ids"])
    assert pieces[0].startswith("▁")
    assert tok.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]) == [0, 1, 2, 3, 258]
    # characters never seen in training fall back to bytes and decode back exactly
    text = "naïve café 東"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    # the literal text "<0x41>" is not read as a byte token
    assert tok.decode(tok("<0x41>", add_special_tokens=False)["input_ids"]) == "<0x41>"


def test_byte_level_kind_handles_any_text(trained_tokenizers):
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    text = "naïve café 東 ✓"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.pad_token_id == tok.eos_token_id


def test_different_vocabulary_pairs_really_differ(trained_tokenizers, small_splits):
    """The two cross-vocabulary pairs (Qwen-like -> GPT-2-like, Mistral-like -> LLaMA-like) segment text differently."""
    texts = [r["prompt"] + r["output"] for r in small_splits["train"][:50]]
    for a, b in [("qwen", "gpt2"), ("mistral", "llama")]:
        ta, tb = load_tokenizer(trained_tokenizers[a]), load_tokenizer(trained_tokenizers[b])
        assert ta.get_vocab() != tb.get_vocab()
        differing = sum(ta.tokenize(t) != tb.tokenize(t) for t in texts)
        assert differing > 40, (a, b, differing)
    # Qwen-like splits digits one by one, GPT-2-like need not
    qwen = load_tokenizer(trained_tokenizers["qwen"])
    assert all(len(p.lstrip("Ġ")) <= 1 for p in qwen.tokenize(" 4242") if p.lstrip("Ġ").isdigit())


def test_unknown_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        train_tokenizer("wordpiece", 500, ["a b c"], tmp_path / "t")


@pytest.mark.skipif(not (SHARED / "tokenizers").is_dir(), reason="../shared/tokenizers is absent")
@pytest.mark.parametrize("name, expected", [
    ("gpt2", [40, 588, 9552, 11, 290, 1233, 40903, 13]),
    ("qwen1.5", [40, 1075, 15235, 11, 323, 1582, 66084, 13]),
])
def test_loads_real_tokenizers_by_path(name, expected):
    tok = load_tokenizer(SHARED / "tokenizers" / name)
    assert tok("I like AI, and distillation.", add_special_tokens=False)["input_ids"] == expected
    assert tok.pad_token_id is not None
