"""Representation distance of Figure 3 (PAPER.md section 4): the two structure distances by hand and by their
invariances, the response hidden states, and a pair of tiny models end to end."""
import math

import pytest
import torch

from repro.models import init_model
from repro.representation import (
    cosine_distance,
    example_texts,
    inner_product_distance,
    pair_distances,
    response_hidden_states,
)
from repro.vocab import load_tokenizer


def test_cosine_distance_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])           # orthogonal: cosine matrix = identity
    t = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # parallel: cosine matrix = all ones
    # |I - 1| has two off-diagonal ones out of four entries
    assert cosine_distance(s, t).item() == pytest.approx(0.5)


def test_inner_product_distance_by_hand():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # H H^T = [[1, 1], [1, 2]] -> rows [1/2, 1/2], [1/3, 2/3]
    t = torch.tensor([[2.0], [1.0]])            # H H^T = [[4, 2], [2, 1]] -> rows [2/3, 1/3], [2/3, 1/3]
    expected = ((abs(1 / 2 - 2 / 3) + abs(1 / 2 - 1 / 3)) + (abs(1 / 3 - 2 / 3) + abs(2 / 3 - 1 / 3))) / 2
    assert inner_product_distance(s, t).item() == pytest.approx(expected)


def test_structure_distances_ignore_the_space_the_states_live_in():
    """Both compare token-token structure: a student whose states are the teacher's mapped into another space by
    an isometry (any width) is at distance zero; scaling all states changes neither distance."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(7, 5, generator=g)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=g))
    student = torch.cat([teacher, torch.zeros(7, 4)], dim=1) @ q  # an isometric embedding into 9 dimensions
    assert cosine_distance(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert inner_product_distance(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert cosine_distance(3.0 * student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert inner_product_distance(3.0 * student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(7, 5, generator=g)
    assert cosine_distance(other, teacher) > 0.05 and inner_product_distance(other, teacher) > 0.05


def test_distances_need_the_same_tokens():
    with pytest.raises(ValueError, match=r"same n"):
        cosine_distance(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"same n"):
        inner_product_distance(torch.zeros(3), torch.zeros(3, 2))


def test_example_texts_cut_prompt_and_output():
    rows = [{"prompt": "p" * 300, "instruction": "i", "input": "", "output": "o" * 400},
            {"prompt": "q", "instruction": "j", "input": "", "output": ["first", "second"]},
            {"prompt": "r", "instruction": "k", "input": "", "output": "x"}]
    texts = example_texts(rows, 2, 256)
    assert texts == [("p" * 256, "o" * 256), ("q", "first")]
    with pytest.raises(ValueError, match=r"example 0 .*empty response"):
        example_texts([{"prompt": "p", "instruction": "i", "input": "", "output": "   "}], 5, 256)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("figure3")
    tok = load_tokenizer(trained_tokenizers["gpt2"])
    spec = {"arch": "gpt2", "layers": 1, "hidden": 16, "heads": 2, "max_positions": 512}
    init_model({**spec, "hidden": 32}, tok, root / "teacher", seed=0)
    init_model(spec, tok, root / "student_a", seed=1)
    init_model(spec, tok, root / "student_b", seed=2)
    init_model(spec, load_tokenizer(trained_tokenizers["llama"]), root / "other_vocab", seed=3)
    return root


def test_response_hidden_states_are_the_final_states_of_the_response_tokens(tiny_pair, small_splits):
    from repro.models import load_model

    model, tok = load_model(tiny_pair / "teacher"), load_tokenizer(tiny_pair / "teacher")
    texts = example_texts(small_splits["train"], 3, 256)
    states = response_hidden_states(model, tok, texts)
    for (prompt, response), h in zip(texts, states):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(response, add_special_tokens=False)["input_ids"]
        assert h.shape == (len(r), 32)
        with torch.no_grad():
            full = model(torch.tensor([p + r]), output_hidden_states=True).hidden_states[-1][0]
        assert torch.allclose(h, full[len(p):], atol=1e-5)


def test_pair_distances_end_to_end(tiny_pair, small_splits):
    rows = small_splits["train"]
    values = pair_distances(tiny_pair / "teacher", {"A": tiny_pair / "student_a", "self": tiny_pair / "teacher"},
                            rows, n_examples=5, max_chars=256)
    assert set(values) == {"A", "self"}
    assert all(len(values["A"][k]) == 5 for k in ("cosine", "inner_product"))
    assert all(v == pytest.approx(0.0, abs=1e-9) for k in values["self"] for v in values["self"][k])
    assert all(math.isfinite(v) and v > 0 for v in values["A"]["cosine"])
    with pytest.raises(ValueError, match="tokenise differently"):
        pair_distances(tiny_pair / "teacher", {"B": tiny_pair / "other_vocab"}, rows, 2, 256)
