"""MinED's pieces: DTW alignment, the minimum-edit-distance vocabulary map, the KD term; on real tokenizers too."""
import json
import math
import random
import subprocess
import sys

import numpy as np
import plain
import pytest
import torch

import repro.alignment as alignment
from conftest import REPO, SHARED
from repro.alignment import (
    align_examples,
    align_positions,
    dtw_align,
    first_teacher_ids,
    mapping_strings,
    normalize,
    space_mark,
    token_strings,
    vocab_mapping,
)
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


def _random_tokens(rng: random.Random, n: int) -> list[str]:
    # a small alphabet with the empty string and shared prefixes: many equal costs, so many ties in the DP
    return [rng.choice(["", "a", "b", "ab", "ba", "abc", "c", "aa", "the", "then"]) for _ in range(n)]


def test_dtw_equals_the_plain_reference_on_random_and_edge_cases():
    """The batched DTW gives exactly the plain cell-by-cell DTW's alignment (``tests/plain.py``), ties included."""
    rng = random.Random(0)
    cases = [([], []), ([], ["x"]), (["x"], []), (["x"], ["x"]), (["x"], ["y"]), (["a"], ["a", "a", "a"]),
             (["a", "a", "a"], ["a"]), ([""] * 4, [""] * 3), (["a", "b"], ["b", "a"]),
             (["ab", "c"], ["a", "bc"]), (["x"] * 7, ["x"] * 7)]
    cases += [(_random_tokens(rng, rng.randint(0, 12)), _random_tokens(rng, rng.randint(0, 12))) for _ in range(1500)]
    same = _random_tokens(rng, 40)
    cases += [(same, list(same)), (_random_tokens(rng, 150), _random_tokens(rng, 170))]
    for s, t in cases:
        assert dtw_align(s, t) == plain.dtw_align(s, t), (s, t)
    # the identical sequences align one-to-one everywhere
    assert dtw_align(same, same) == list(range(40))


def test_dtw_equals_the_plain_reference_in_int64(monkeypatch):
    """Where the int32 bound fails (here: a lowered infinity), the DP runs in int64 with the same result."""
    rng = random.Random(1)
    cases = [(_random_tokens(rng, rng.randint(1, 10)), _random_tokens(rng, rng.randint(1, 10))) for _ in range(300)]
    expected = [plain.dtw_align(s, t) for s, t in cases]
    monkeypatch.setattr(alignment, "_FAR_32", np.int32(16))
    assert [dtw_align(s, t) for s, t in cases] == expected


def _random_example(rng: random.Random, n_vocab: int) -> tuple[list[int], list[int], list[int], list[int]]:
    """One example in two tokenisations: input ids and shifted labels, a prompt of -100 labels; sometimes no
    response position on one side."""
    sides = []
    for _ in range(2):
        length, prompt = rng.randint(1, 40), rng.randint(0, 6)
        ids = [rng.randrange(n_vocab) for _ in range(length + 1)]
        labels = [-100] * min(prompt, length) + ids[prompt + 1:]
        sides += [ids[:-1], labels[:length]]
    return tuple(sides)


@pytest.mark.parametrize("tokens", ["input", "label"])
def test_align_examples_equals_the_plain_reference(tokens):
    """Batched over many examples (and over many small batches), the alignment is the example-by-example one;
    the id check goes through an array or a dict vocabulary map alike."""
    rng = random.Random(2)
    s_strings = _random_tokens(rng, 30)
    t_strings = _random_tokens(rng, 40)
    vocab_map = np.array([rng.randrange(30) for _ in range(40)])
    vocab_map[:20] = [s_strings.index(t) if t in s_strings else 0 for t in t_strings[:20]]
    examples = [_random_example(rng, 30) for _ in range(300)]
    examples = [(s_in, s_lab, [t % 40 for t in t_in], [t % 40 if t != -100 else t for t in t_lab])
                for s_in, s_lab, t_in, t_lab in examples]
    expected = [plain.align_positions(*e, s_strings, t_strings, vocab_map, tokens) for e in examples]
    assert any(j >= 0 for row in expected for j in row)
    assert align_examples(examples, s_strings, t_strings, vocab_map, tokens) == expected
    assert align_examples(examples, s_strings, t_strings, vocab_map, tokens, batch_cells=200) == expected
    as_dict = dict(enumerate(vocab_map.tolist()))
    assert align_examples(examples, s_strings, t_strings, as_dict, tokens) == expected
    assert align_examples([], s_strings, t_strings, vocab_map, tokens) == []


def test_rapidfuzz_runs_on_the_jobs_threads(trained_tokenizers, monkeypatch):
    """The vocabulary map's edit distances take the job's thread count (``torch.get_num_threads()``) or an explicit
    one, never -1 (every core of the node); the DTW's small per-example matrices take one thread."""
    calls = []
    cdist = alignment.process.cdist

    def recording(*args, workers=1, **kwargs):
        calls.append(workers)
        return cdist(*args, workers=workers, **kwargs)

    monkeypatch.setattr(alignment.process, "cdist", recording)
    teacher, student = load_tokenizer(trained_tokenizers["qwen"]), load_tokenizer(trained_tokenizers["gpt2"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        vocab_mapping(teacher, student, cache=False)
        assert calls and set(calls) == {1}
        calls.clear()
        vocab_mapping(teacher, student, cache=False, workers=3)
        assert calls and set(calls) == {3}
    finally:
        torch.set_num_threads(before)
    calls.clear()
    dtw_align(["a", "b"], ["ab"])
    assert calls == [1]
    for bad in (-1, 0, 1.5):
        with pytest.raises(ValueError, match="rapidfuzz workers must be a positive thread count"):
            vocab_mapping(teacher, student, cache=False, workers=bad)


def test_mined_benchmark_script_times_both_alignments(tmp_path, trained_tokenizers, small_splits):
    from repro.io import write_jsonl

    write_jsonl(tmp_path / "data" / "train.jsonl", small_splits["train"][:15])
    out = tmp_path / "mined.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_mined.py"), "--data",
                           str(tmp_path / "data"), "--teacher", str(trained_tokenizers["qwen"]), "--student",
                           str(trained_tokenizers["gpt2"]), "--n", "40", "--old-n", "10", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["n"] == 40 and result["old_n"] == 10 and 0 < result["aligned_share"] <= 1
    assert result["old_s_extrapolated"] == pytest.approx(result["old_s_at_old_n"] * 4)
    assert result["ratio"] == pytest.approx(result["old_s_extrapolated"] / result["new_s"])
    assert "identical results" in done.stdout and "extrapolated from 10" in done.stdout


@pytest.mark.parametrize("marks", ["convert", "strip"])
@pytest.mark.parametrize("teacher_name", ["qwen", "mistral"])
def test_vocab_mapping_prefers_exact_then_closest(trained_tokenizers, tmp_path, monkeypatch, teacher_name, marks):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    teacher, student = load_tokenizer(trained_tokenizers[teacher_name]), load_tokenizer(trained_tokenizers["gpt2"])
    mapping = vocab_mapping(teacher, student, marks=marks)
    assert mapping.shape == (len(teacher),) and mapping.min() >= 0 and mapping.max() < len(student)
    t_str, s_str = mapping_strings(teacher, student, marks)
    s_set = set(s_str)
    specials = {teacher.eos_token_id, teacher.bos_token_id, teacher.unk_token_id, teacher.pad_token_id}
    for tid in range(len(teacher)):
        if t_str[tid] in s_set and tid not in specials:
            assert s_str[mapping[tid]] == t_str[tid]
    assert mapping[teacher.eos_token_id] == student.eos_token_id
    from rapidfuzz.distance import Levenshtein

    for tid in [t for t in range(len(teacher)) if t_str[t] not in s_set and t not in specials][:20]:
        best = min(Levenshtein.distance(t_str[tid], s) for s in s_str)
        assert Levenshtein.distance(t_str[tid], s_str[mapping[tid]]) == best
    # cached on disk per tokenizer pair, and read back
    cached = list((tmp_path / "vocab_maps").glob("*.npy"))
    assert len(cached) == 1
    assert np.array_equal(np.load(cached[0]), mapping)
    assert np.array_equal(vocab_mapping(teacher, student, marks=marks), mapping)
    # a subset is computed directly
    assert np.array_equal(vocab_mapping(teacher, student, teacher_ids=[5, 7], marks=marks), mapping[[5, 7]])


def test_vocab_mapping_converts_space_marks_as_fusellm(trained_tokenizers, tmp_path, monkeypatch):
    """A sentencepiece teacher (``▁``) and a byte-level student (``Ġ``): with ``convert`` (FuseLLM's map, the
    official one) a teacher token with a leading space maps to a student token with a leading space where one with
    the same text exists; ``strip`` loses the distinction, so some such tokens land on their unspaced twins."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path))
    teacher, student = load_tokenizer(trained_tokenizers["mistral"]), load_tokenizer(trained_tokenizers["gpt2"])
    assert (space_mark(teacher), space_mark(student)) == ("▁", "Ġ")
    t_raw = teacher.convert_ids_to_tokens(list(range(len(teacher))))
    s_raw = student.convert_ids_to_tokens(list(range(len(student))))
    s_set = set(s_raw)
    spaced = [t for t, tok in enumerate(t_raw) if tok.startswith("▁") and "Ġ" + tok[1:] in s_set]
    assert len(spaced) > 50
    converted, stripped = vocab_mapping(teacher, student), vocab_mapping(teacher, student, marks="strip")
    assert all(s_raw[converted[t]] == "Ġ" + t_raw[t][1:] for t in spaced)
    assert sum(not s_raw[stripped[t]].startswith("Ġ") for t in spaced) > 0
    # the two conventions are cached apart
    assert len(list((tmp_path / "vocab_maps").glob("*.npy"))) == 2


def test_align_positions_input_tokens_with_id_check_or_labels():
    """One example, hand-built: prompt "p", response "dog" + "sand" (student) or "dog" + "sa" + "nd" (teacher),
    then EOS. Sequences are shifted (input_ids[t] predicts labels[t]); every position here is a response position."""
    s_strings, t_strings = ["p", "dog", "sand", "</s>"], ["p", "dog", "sa", "nd", "</s>"]
    s_input, s_labels = [0, 1, 2], [1, 2, 3]
    t_input, t_labels = [0, 1, 2, 3], [1, 2, 3, 4]
    identity_like = {0: 0, 1: 1, 2: 2, 3: 2, 4: 3}  # teacher id -> student id
    # input tokens p, dog, sand vs p, dog, sa, nd: "sand" warps onto "sa" and "nd" (one-to-many, unaligned)
    assert align_positions(s_input, s_labels, t_input, t_labels, s_strings, t_strings, identity_like, "input") \
        == [0, 1, -1]
    # label tokens dog, sand, </s> vs dog, sa, nd, </s>: the EOS pair instead of the prompt's last token
    assert align_positions(s_input, s_labels, t_input, t_labels, s_strings, t_strings, None, "label") == [0, -1, 3]
    # the id check: teacher "dog" mapped elsewhere drops the (dog, dog) pair with input tokens, not with labels
    wrong_x = {**identity_like, 1: 3}
    assert align_positions(s_input, s_labels, t_input, t_labels, s_strings, t_strings, wrong_x, "input") \
        == [0, -1, -1]
    assert align_positions(s_input, s_labels, t_input, t_labels, s_strings, t_strings, wrong_x, "label") \
        == [0, -1, 3]
    # prompt positions never take part: with a two-token prompt the first position is not a response position
    assert align_positions([0, 0, 1, 2], [-100, 1, 2, 3], [0, 0, 1, 2, 3], [-100, 1, 2, 3, 4], s_strings,
                           t_strings, identity_like, "input") == [-1, 1, 2, -1]
    with pytest.raises(ValueError, match="alignment tokens"):
        align_positions(s_input, s_labels, t_input, t_labels, s_strings, t_strings, None, "output")


def test_first_teacher_ids():
    # teacher ids 0, 1 -> student 1; teacher 2 -> student 0; student 2 has no teacher id
    assert first_teacher_ids(torch.tensor([1, 1, 0]), 3).tolist() == [2, 0, -1]
    assert first_teacher_ids(torch.tensor([1, 0, 1]), 2).tolist() == [1, 0]
    with pytest.raises(ValueError, match="outside"):
        first_teacher_ids(torch.tensor([0, 3]), 3)


def _kl(q, p):
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(q, p) if a > 0)


def _softmax(z, tau):
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def test_mined_first_teacher_id_target_by_hand():
    """Map teacher 0 -> student 1, teacher 1 -> student 1, teacher 2 -> student 0; student 2 unmapped. ``first``:
    student 1 takes teacher 0's logit (the first id mapped to it), student 0 teacher 2's, student 2 gets -1e5; then
    softmax at tau. ``sum``: the teacher's probabilities at tau, teachers 0 and 1 added on student 1."""
    tau = 2.0
    z_s = torch.tensor([[[0.5, -1.0, 2.0]]])
    z_t = torch.tensor([[[1.0, 3.0, -0.5]]])
    labels, positions, vocab_map = torch.tensor([[2]]), torch.tensor([[0]]), torch.tensor([1, 1, 0])
    p_s = _softmax(z_s[0, 0].tolist(), tau)
    first, aligned = mined_kd_sum(z_s, labels, z_t, positions, vocab_map, tau, target="first")
    q_first = _softmax([-0.5, 1.0], tau) + [0.0]  # student ids 0, 1 from teacher 2, 0
    assert first.item() == pytest.approx(_kl(q_first, p_s), abs=1e-6) and aligned.item() == 1
    p_t = _softmax(z_t[0, 0].tolist(), tau)
    total, _ = mined_kd_sum(z_s, labels, z_t, positions, vocab_map, tau, target="sum")
    assert total.item() == pytest.approx(_kl([p_t[2], p_t[0] + p_t[1], 0.0], p_s), abs=1e-6)
    # teacher 1's logit (the second id mapped to student 1) does not enter the official target
    z_t2 = z_t.clone()
    z_t2[0, 0, 1] = -7.0
    assert mined_kd_sum(z_s, labels, z_t2, positions, vocab_map, tau, target="first")[0].item() == \
        pytest.approx(first.item(), abs=1e-6)
    # an unaligned position is one-hot on the gold token in both
    for target in ("first", "sum"):
        one_hot, n = mined_kd_sum(z_s, labels, z_t, torch.tensor([[-1]]), vocab_map, tau, target=target)
        assert one_hot.item() == pytest.approx(-math.log(p_s[2]), abs=1e-6) and n.item() == 0


def test_mined_targets_agree_for_an_injective_map():
    """Where no two teacher ids share a student id, the first-id logits renormalised over the mapped ids are the
    summed probabilities: both targets give the same term."""
    torch.manual_seed(0)
    z_s, z_t = torch.randn(2, 5, 9), torch.randn(2, 4, 6)
    labels = torch.randint(0, 9, (2, 5))
    positions = torch.tensor([[0, 2, -1, 3, 1], [-1, 0, 1, 2, 3]])
    vocab_map = torch.tensor([4, 0, 8, 2, 7, 5])
    first = mined_kd_sum(z_s, labels, z_t, positions, vocab_map, 2.0, target="first")[0]
    total = mined_kd_sum(z_s, labels, z_t, positions, vocab_map, 2.0, target="sum")[0]
    assert first.item() == pytest.approx(total.item(), rel=1e-5)


def test_mined_kd_by_hand():
    # student vocabulary 3, teacher vocabulary 2, map teacher 0 -> student 2, teacher 1 -> student 0
    z_s = torch.log(torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]]))
    labels = torch.tensor([[0, 1]])
    z_t = torch.log(torch.tensor([[[0.7, 0.3]]]))
    positions = torch.tensor([[0, -1]])  # position 0 aligned to teacher 0; position 1 unaligned
    kd, aligned = mined_kd_sum(z_s, labels, z_t, positions, torch.tensor([2, 0]), temperature=1.0, target="sum")
    q = {0: 0.3, 2: 0.7}
    expected = sum(p * (math.log(p) - math.log([0.2, 0.3, 0.5][v])) for v, p in q.items()) - math.log(0.3)
    assert kd.item() == pytest.approx(expected, abs=1e-5)
    assert aligned.item() == 1
    # two teacher ids on one student id: their probabilities add up
    kd2, _ = mined_kd_sum(z_s[:, :1], labels[:, :1], z_t, positions[:, :1], torch.tensor([2, 2]), 1.0, target="sum")
    assert kd2.item() == pytest.approx(-math.log(0.5), abs=1e-5)


def _real_rows(n):
    return load_examples(SHARED / "data" / "minillm" / "dolly" / "test.jsonl")[:n]


needs_shared = pytest.mark.skipif(not (SHARED / "tokenizers").is_dir() or not (SHARED / "data").is_dir(),
                                  reason="../shared tokenizers or data are absent")


@needs_shared
# measured on the first 20 Dolly test examples: labels 0.885 (Qwen1.5 -> GPT-2) and 0.940 (Mistral -> LLaMA-2);
# input tokens with the id check through FuseLLM's map (the official code) 0.822 and 0.895
@pytest.mark.parametrize("tokens, qwen_minimum, mistral_minimum", [("label", 0.85, 0.9), ("input", 0.8, 0.85)])
@pytest.mark.parametrize("teacher_name, student_name", [("qwen1.5", "gpt2"), ("mistral", "llama2")])
def test_dtw_alignment_on_real_tokenizers(teacher_name, student_name, tokens, qwen_minimum, mistral_minimum):
    """The paper's cross-vocabulary pairs on real Dolly text: most response tokens align one-to-one, and where they
    do, the two aligned token strings are mostly identical (always the same id through the map for "input")."""
    teacher = load_tokenizer(SHARED / "tokenizers" / teacher_name)
    student = load_tokenizer(SHARED / "tokenizers" / student_name)
    encoded = encode_dataset(_real_rows(20), student, 512, 256, teacher_tokenizer=teacher)
    ids = sorted({i for e in encoded for i in e.teacher.input_ids + e.teacher.labels if i >= 0})
    vocab_map = dict(zip(ids, vocab_mapping(teacher, student, teacher_ids=ids).tolist()))
    share = align_dataset(encoded, student, teacher, tokens, vocab_map)
    assert share >= (qwen_minimum if teacher_name == "qwen1.5" else mistral_minimum), share
    s_str, t_str = token_strings(student), token_strings(teacher)
    same = total = 0
    for enc in encoded:
        s_tok, t_tok = (enc.input_ids, enc.teacher.input_ids) if tokens == "input" else (enc.labels, enc.teacher.labels)
        for i, j in enumerate(enc.teacher_positions):
            if j >= 0:
                assert enc.labels[i] != IGNORE and enc.teacher.labels[j] != IGNORE
                if tokens == "input":
                    assert vocab_map[t_tok[j]] == s_tok[i]
                same += s_str[s_tok[i]] == t_str[t_tok[j]]
                total += 1
    assert same / total > 0.9, same / total


@needs_shared
@pytest.mark.parametrize("teacher_name, student_name", [("qwen1.5", "gpt2"), ("mistral", "llama2")])
def test_batched_alignment_equals_the_plain_one_on_real_data(teacher_name, student_name):
    """Real Dolly examples, real tokenizers: the batched alignment is the plain example-by-example one, for both
    aligned-token conventions."""
    teacher = load_tokenizer(SHARED / "tokenizers" / teacher_name)
    student = load_tokenizer(SHARED / "tokenizers" / student_name)
    encoded = encode_dataset(_real_rows(60), student, 512, 256, teacher_tokenizer=teacher)
    ids = sorted({i for e in encoded for i in e.teacher.input_ids if i >= 0})
    vocab_map = np.full(len(teacher), -1)
    vocab_map[ids] = vocab_mapping(teacher, student, teacher_ids=ids)
    s_str, t_str = token_strings(student), token_strings(teacher)
    examples = [(e.input_ids, e.labels, e.teacher.input_ids, e.teacher.labels) for e in encoded]
    for tokens in ("input", "label"):
        expected = [plain.align_positions(*e, s_str, t_str, vocab_map, tokens) for e in examples]
        assert align_examples(examples, s_str, t_str, vocab_map, tokens) == expected


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
