"""Rouge-L as the paper scores it and the mean and spread over seeds (repro.metrics)."""
import pytest

from repro.metrics import mean_std, rouge_l


def test_rouge_l():
    assert rouge_l("the cat sat", ["the cat sat"]) == pytest.approx(100.0)
    assert rouge_l("", ["the cat sat"]) == 0.0
    # stemming on, max over references
    assert rouge_l("cats sitting", ["dogs", "cat sits"]) == pytest.approx(100.0)
    # LCS 2 of 3 tokens, both sides: P = R = 2/3
    assert rouge_l("a b d", ["a b c"]) == pytest.approx(100 * 2 / 3)
    with pytest.raises(ValueError):
        rouge_l("x", [])


def test_rouge_l_with_the_stem_cache_equals_rouge_score_itself(small_splits):
    """The scorer's cached stems change nothing: Rouge-L equals ``rouge_score``'s own scorer with stemming, on the
    generated data's references scored against each other and against shuffled, cut and case-changed copies."""
    import random

    from rouge_score import rouge_scorer

    from repro.data import references

    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(0)
    texts = [ref for rows in small_splits.values() for r in rows for ref in references(r)][:300]
    texts += ["Running runners ran; happily, happiness generalizes generously!", "", "  ", "ÄÖÜ naïve café"]
    pairs = [("cats sitting quietly", "cat sits quiet"), ("running runners ran", "run runner runs")]  # stems decide
    for k, ref in enumerate(texts):
        words = ref.split()
        rng.shuffle(words)
        pairs += [(pred, ref) for pred in (texts[(k * 7 + 3) % len(texts)], " ".join(words[: max(1, len(words) - 2)]),
                                           ref.upper())]
    for pred, ref in pairs:
        assert rouge_l(pred, [ref]) == 100.0 * plain.score(ref, pred)["rougeL"].fmeasure, (pred, ref)
    assert rouge_l(pairs[0][0], [pairs[0][1]]) > 60  # (stemming on: 'cats sitting quietly' ~ 'cat sits quiet')


def test_mean_std():
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([5.0]) == {"mean": 5.0, "std": 0.0}
