"""MinED's pieces: DTW alignment, the minimum-edit-distance vocabulary map, the KD term; on real tokenizers too."""
import math

import numpy as np
import pytest
import torch

from conftest import SHARED
from repro.alignment import dtw_align, normalize, token_strings, vocab_mapping
from repro.data import IGNORE, encode_dataset, load_examples
from repro.methods import align_dataset, mined_kd_sum
from repro.vocab import load_tokenizer


def test_normalize_strips_space_marks():
    assert normalize("Ġcat") == "cat" and normalize("▁cat") == "cat" and normalize("cat") == "cat"


def test_dtw_one_to_one_and_one_to_many():
    # "the" <-> "the" one-to-one; "cat" and "s" both warp onto "cats": one-to-many -> unaligned
    assert dtw_align(["the", "cat", "s"], ["the", "cats"]) == [0, -1, -1]
    assert dtw_align(["a", "b", "c"], ["a", "b", "c"]) == [0, 1, 2]
    # a teacher token split in two on the teacher side: the student token is one-to-many, so unaligned
    assert dtw_align(["hello", "world"], ["hel", "lo", "world"]) == [-1, 2]
    assert dtw_align([], ["x"]) == []
    assert dtw_align(["x"], []) == [-1]


def test_vocab_mapping_prefers_exact_then_closest(trained_tokenizers, tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    teacher, student = load_tokenizer(trained_tokenizers["qwen"]), load_tokenizer(trained_tokenizers["gpt2"])
    mapping = vocab_mapping(teacher, student)
    assert mapping.shape == (len(teacher),) and mapping.min() >= 0 and mapping.max() < len(student)
    t_str, s_str = token_strings(teacher), token_strings(student)
    s_set = set(s_str)
    for tid in range(len(teacher)):
        if t_str[tid] in s_set and tid not in (teacher.eos_token_id,):
            assert s_str[mapping[tid]] == t_str[tid]
    assert mapping[teacher.eos_token_id] == student.eos_token_id
    from rapidfuzz.distance import Levenshtein

    for tid in [t for t in range(len(teacher)) if t_str[t] not in s_set][:20]:
        best = min(Levenshtein.distance(t_str[tid], s) for s in s_str)
        assert Levenshtein.distance(t_str[tid], s_str[mapping[tid]]) == best
    # cached on disk per tokenizer pair, and read back
    cached = list((tmp_path / "vocab_maps").glob("*.npy"))
    assert len(cached) == 1
    assert np.array_equal(np.load(cached[0]), mapping)
    assert np.array_equal(vocab_mapping(teacher, student), mapping)
    # a subset is computed directly
    assert np.array_equal(vocab_mapping(teacher, student, teacher_ids=[5, 7]), mapping[[5, 7]])


def test_mined_kd_by_hand():
    # student vocabulary 3, teacher vocabulary 2, map teacher 0 -> student 2, teacher 1 -> student 0
    z_s = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]]))
    labels = torch.tensor([[0, 1]])
    z_t = torch.log(torch.tensor([[[0.7, 0.3]]]))
    positions = torch.tensor([[0, -1]])  # position 0 aligned to teacher 0; position 1 unaligned
    kd, aligned = mined_kd_sum(z_s, labels, z_t, positions, torch.tensor([2, 0]), temperature=1.0)
    q = {0: 0.3, 2: 0.7}
    expected = sum(p * (math.log(p) - math.log([0.2, 0.3, 0.5][v])) for v, p in q.items()) - math.log(0.3)
    assert kd.item() == pytest.approx(expected, abs=1e-5)
    assert aligned.item() == 1
    # two teacher ids on one student id: their probabilities add up
    kd2, _ = mined_kd_sum(z_s[:, :1], labels[:, :1], z_t, positions[:, :1], torch.tensor([2, 2]), 1.0)
    assert kd2.item() == pytest.approx(-math.log(0.5), abs=1e-5)


def _real_rows(n):
    return load_examples(SHARED / "data" / "minillm" / "dolly" / "test.jsonl")[:n]


needs_shared = pytest.mark.skipif(not (SHARED / "tokenizers").is_dir() or not (SHARED / "data").is_dir(),
                                  reason="../shared tokenizers or data are absent")


@needs_shared
# measured on the first 20 Dolly test examples: 0.885 (Qwen1.5 -> GPT-2) and 0.940 (Mistral -> LLaMA-2)
@pytest.mark.parametrize("teacher_name, student_name, minimum", [("qwen1.5", "gpt2", 0.85), ("mistral", "llama2", 0.9)])
def test_dtw_alignment_on_real_tokenizers(teacher_name, student_name, minimum):
    """The paper's cross-vocabulary pairs on real Dolly text: most response tokens align one-to-one, and where they
    do, the two token strings are mostly identical."""
    teacher = load_tokenizer(SHARED / "tokenizers" / teacher_name)
    student = load_tokenizer(SHARED / "tokenizers" / student_name)
    encoded = encode_dataset(_real_rows(20), student, 512, 256, teacher_tokenizer=teacher)
    share = align_dataset(encoded, student, teacher)
    assert share >= minimum, share
    s_str, t_str = token_strings(student), token_strings(teacher)
    same = total = 0
    for enc in encoded:
        for i, j in enumerate(enc.teacher_positions):
            if j >= 0:
                assert enc.labels[i] != IGNORE and enc.teacher.labels[j] != IGNORE
                same += s_str[enc.labels[i]] == t_str[enc.teacher.labels[j]]
                total += 1
    assert same / total > 0.9, same / total


@needs_shared
def test_vocab_mapping_on_real_tokenizers():
    teacher = load_tokenizer(SHARED / "tokenizers" / "qwen1.5")
    student = load_tokenizer(SHARED / "tokenizers" / "gpt2")
    text = " ".join(r["output"] for r in _real_rows(5))
    ids = sorted(set(teacher(text, add_special_tokens=False)["input_ids"]))
    mapping = vocab_mapping(teacher, student, teacher_ids=ids)
    t_str, s_str = token_strings(teacher), token_strings(student)
    exact = sum(t_str[t] == s_str[s] for t, s in zip(ids, mapping))
    assert exact / len(ids) > 0.95


@needs_shared
def test_uld_alignment_on_real_tokenizers():
    """ULD pairs response tokens by index; on real text both tokenisations have response tokens to pair."""
    from repro.data import collate
    from repro.methods import uld_distance_sum

    teacher = load_tokenizer(SHARED / "tokenizers" / "mistral")
    student = load_tokenizer(SHARED / "tokenizers" / "llama2")
    encoded = encode_dataset(_real_rows(3), student, 512, 256, teacher_tokenizer=teacher)
    batch = collate(encoded, student.pad_token_id, teacher.pad_token_id)
    z_s = torch.randn(*batch["input_ids"].shape, 64)
    z_t = torch.randn(*batch["teacher_input_ids"].shape, 80)
    value = uld_distance_sum(z_s, batch["labels"], z_t, batch["teacher_labels"])
    pairs = sum(min(int((s != IGNORE).sum()), int((t != IGNORE).sum()))
                for s, t in zip(batch["labels"], batch["teacher_labels"]))
    assert pairs > 30 and 0 < value.item() <= 2 * pairs
