"""Rouge-L as the paper reports it (PAPER.md section 4): F1 of Google's ``rouge_score`` with stemming, max over the
references, times 100."""
from __future__ import annotations

from functools import lru_cache
from statistics import fmean, mean, pstdev, stdev


class _StemCache:
    """The Porter stemmer of ``rouge_score`` with every word's stem remembered: the same stems (the stemmer is a
    pure function of the word), without stemming the same words again for every prediction and reference (the
    stemmer was most of the time of scoring)."""

    def __init__(self):
        from nltk.stem import porter

        self.stem = lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer, tokenize, tokenizers

    stemmer = _StemCache()

    class StemmingTokenizer(tokenizers.Tokenizer):
        """``rouge_score``'s default tokenizer with stemming (``use_stemmer=True``), through the stem cache."""

        def tokenize(self, text):
            return tokenize.tokenize(text, stemmer)

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=StemmingTokenizer())


def rouge_l(prediction: str, refs: list[str]) -> float:
    """Rouge-L F1 x 100 of ``prediction`` against the best of ``refs``."""
    if not refs:
        raise ValueError("rouge_l needs at least one reference")
    scorer = _scorer()
    return 100.0 * max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in refs)


def mean_std(values: list[float]) -> dict:
    """Mean and population standard deviation of per-seed scores."""
    return {"mean": mean(values), "std": pstdev(values) if len(values) > 1 else 0.0}


def mean_sample_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value): the spread over training runs."""
    return fmean(values), (stdev(values) if len(values) > 1 else 0.0)
