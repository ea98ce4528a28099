"""The exact teacher-state cache: every white-box method gives the same terms and gradients from the cache as from
the live teacher, a short training run ends with the same weights, and a cache built for other inputs is refused."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, make_pair
from repro import teacher_states
from repro.data import collate, encode_dataset
from repro.methods import get_method
from repro.models import load_model
from repro.settings import TrainSettings
from repro.synthetic import write_splits
from repro.training import build_context
from repro.vocab import load_tokenizer

MAX_LENGTH = 256
# (teacher arch, tokenizer), (student arch, tokenizer), methods
PAIRS = {
    "same": (("llama", "llama"), ("llama", "llama"), ["kd:kl", "kd:akl", "dskd:js", "dskd_student_space:kl"]),
    "cross": (("qwen2", "qwen"), ("gpt2", "gpt2"), ["uld", "mined", "dskd_cma:kl"]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory, trained_tokenizers):
    root = tmp_path_factory.mktemp("states")
    return {name: make_pair(root / name, trained_tokenizers, teacher, student, seeds=(5, 5), max_positions=MAX_LENGTH)
            for name, (teacher, student, _) in PAIRS.items()}


def _context(method_name, teacher, t_tok, s_tok, divergence):
    method = get_method(method_name)
    settings = TrainSettings(lr=1e-3, epochs=1, max_length=MAX_LENGTH)
    return method, build_context(settings, s_tok, divergence, teacher, t_tok if method.cross_vocab else None)


def cached_set(teacher, rows, s_tok, t_tok, cross: bool):
    """The encoded training set of ``rows`` (both tokenisations when ``cross``) and the teacher-state cache of
    ``teacher`` over it (with DSKD-CMA's official statistics), built as the cache job builds it."""
    encoded = encode_dataset(rows, s_tok, MAX_LENGTH, 128, teacher_tokenizer=t_tok if cross else None)
    side = encode_dataset(rows, t_tok, MAX_LENGTH, 128)  # what the cache builder tokenises
    states = teacher_states.build(teacher, side, t_tok.pad_token_id, {"test": True}, cma=("official",),
                                  max_length=MAX_LENGTH, batch_size=3)
    teacher_states.check_matches(states, encoded, "cache")
    return encoded, states


def step_terms(spec: str, teacher, states, encoded, student_dir, s_tok, t_tok, cross: bool):
    """One global batch of method ``spec`` (``name[:divergence]``) on ``encoded`` with ``teacher`` (a model or its
    parts) and ``states`` (None: the live teacher), from a fixed student and projector init: the summed terms, the
    gradients of the student and projectors, and the context."""
    name, _, divergence = spec.partition(":")
    torch.manual_seed(0)
    student = load_model(student_dir)
    method, ctx = _context(name, teacher, t_tok, s_tok, divergence or None)
    ctx.teacher_states = states
    ctx.modules = method.build(student, teacher)
    method.prepare(encoded, s_tok, ctx)
    # two micro batches of one global batch, in another order than the cache was built in
    method.begin_step(encoded, ctx)
    terms_sum: dict[str, float] = {}
    for part in (encoded[6:], encoded[:6]):
        terms = method.loss(student, collate(part, s_tok.pad_token_id, t_tok.pad_token_id if cross else None), ctx)
        terms["loss"].backward()
        for k, v in terms.items():
            terms_sum[k] = terms_sum.get(k, 0.0) + v.item()
    params = list(student.parameters()) + (list(ctx.modules.parameters()) if ctx.modules else [])
    return terms_sum, [p.grad.clone() for p in params if p.grad is not None], ctx


def assert_same_step(spec: str, expected: tuple, actual: tuple) -> None:
    """Two ``step_terms`` results agree: terms to 1e-6, gradients to 1e-5, DSKD-CMA's scales (from the cache's
    statistics or computed by the teacher) to 1e-9."""
    (terms, grads, ctx), (other_terms, other_grads, other_ctx) = expected, actual
    for k, v in terms.items():
        assert other_terms[k] == pytest.approx(v, rel=1e-6, abs=1e-6), (spec, k)
    assert len(grads) == len(other_grads)
    for a, b in zip(grads, other_grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    if spec.startswith("dskd_cma"):
        torch.testing.assert_close(other_ctx.cma_scales, ctx.cma_scales, rtol=1e-9, atol=0)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_cached_terms_and_gradients_equal_the_live_teacher(models, small_splits, tmp_path, pair):
    teacher_dir, student_dir = models[pair]
    s_tok, t_tok = load_tokenizer(student_dir), load_tokenizer(teacher_dir)
    teacher = load_model(teacher_dir).eval().requires_grad_(False)
    cross = pair == "cross"
    encoded, states = cached_set(teacher, small_splits["train"][:10], s_tok, t_tok, cross)
    assert states.examples == 10 and states.hidden.shape[1] == 48
    for spec in PAIRS[pair][2]:
        live = step_terms(spec, teacher, None, encoded, student_dir, s_tok, t_tok, cross)
        cached = step_terms(spec, teacher, states, encoded, student_dir, s_tok, t_tok, cross)
        assert_same_step(spec, live, cached)


def _cell(tmp_path, models, cache_file, name, method="kd", divergence="kl"):
    from repro.cells import CellConfig

    teacher_dir, student_dir = models["same"]
    training = {"lr": 5e-3, "epochs": 2, "batch_size": 8, "micro_batch_size": 4, "max_length": MAX_LENGTH,
                "max_prompt_length": 128, "dev_seeds": [10]}
    return CellConfig(cell_id=f"p/{name}", pair="p", method=method, role="student", divergence=divergence,
                      model=str(student_dir), teacher=str(teacher_dir),
                      teacher_states=str(cache_file) if cache_file else None,
                      data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / name), training=training,
                      evaluation={"seeds": [10], "max_new_tokens": 4, "batch_size": 4})


def _build_with_the_cli(tmp_path, models, training, out):
    done = subprocess.run([sys.executable, "-m", "repro.teacher_states", "--teacher", str(models["same"][0]),
                           "--data", str(tmp_path / "data" / "train.jsonl"), "--out", str(out), "--training",
                           json.dumps(training)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_with_the_cache_ends_with_the_same_weights(models, small_splits, tmp_path):
    from repro.cells import train_cell

    splits = {"train": small_splits["train"][:24], "dev": small_splits["dev"][:2],
              **{k: v[:2] for k, v in small_splits.items() if k not in ("train", "dev")}}
    write_splits(splits, tmp_path / "data")
    cache = tmp_path / "states" / "states.pt"
    info = _build_with_the_cli(tmp_path, models, {"max_length": MAX_LENGTH, "max_prompt_length": 128,
                                                  "micro_batch_size": 4}, cache)
    assert info["examples"] == 24 and info["bytes"] == cache.stat().st_size and info["dtype"] == "torch.float32"
    assert json.loads((tmp_path / "states" / "states.json").read_text())["rows"] == info["rows"]
    for method in ("kd", "dskd"):
        live = train_cell(_cell(tmp_path, models, None, f"{method}-live", method))
        cached = train_cell(_cell(tmp_path, models, cache, f"{method}-cached", method))
        assert live["steps"] == cached["steps"] == 6
        a = load_model(tmp_path / f"{method}-live" / "model").state_dict()
        b = load_model(tmp_path / f"{method}-cached" / "model").state_dict()
        for key, value in a.items():
            torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-5)
    # a cache of other data, or of other settings, is refused with what differs
    other = tmp_path / "other" / "states.pt"
    _build_with_the_cli(tmp_path, models, {"max_length": 128, "max_prompt_length": 64}, other)
    with pytest.raises(ValueError, match="another max_length, max_prompt_length"):
        train_cell(_cell(tmp_path, models, other, "refused"))
    rows = (tmp_path / "data" / "train.jsonl").read_text().splitlines()
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(rows[1:]) + "\n")
    with pytest.raises(ValueError, match="another data"):
        train_cell(_cell(tmp_path, models, cache, "refused"))
    with pytest.raises(FileNotFoundError, match="no teacher-state cache"):
        train_cell(_cell(tmp_path, models, tmp_path / "missing.pt", "refused"))


def test_check_matches_names_the_example(models, small_splits):
    teacher_dir, _ = models["same"]
    tok = load_tokenizer(teacher_dir)
    teacher = load_model(teacher_dir).eval()
    encoded = encode_dataset(small_splits["train"][:4], tok, MAX_LENGTH, 128)
    states = teacher_states.build(teacher, encoded, tok.pad_token_id, {})
    with pytest.raises(ValueError, match="holds 4 examples, the training set 3"):
        teacher_states.check_matches(states, encoded[:3], "f")
    shorter = encode_dataset(small_splits["train"][:4], tok, 64, 32)
    with pytest.raises(ValueError, match=r"f: example \d+ has \d+ cached response positions but \d+"):
        teacher_states.check_matches(states, shorter, "f")


def test_fingerprint_memoises_each_checkpoint_file_hash(tmp_path, monkeypatch):
    """A checkpoint file is read once: its sha256 is kept in a sidecar beside the folder with its size, mtime,
    ctime and inode, so a second fingerprint reads no unchanged file (the data file, small, is always read) and
    equals the first; a file changed in place, even to the same size and with its mtime put back, is hashed
    again; a broken sidecar is rebuilt; the memoised fingerprint equals one computed with no sidecar."""
    folder, data = tmp_path / "teacher" / "model", tmp_path / "train.jsonl"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "config.json").write_text('{"a": 1}')
    data.write_text('{"prompt": "p", "output": "o"}\n')
    read = []
    real = teacher_states.file_sha256
    monkeypatch.setattr(teacher_states, "file_sha256", lambda path: read.append(path.name) or real(path))

    def fingerprint():
        read.clear()
        return teacher_states.fingerprint(folder, data, 256, 128, "float32")

    first = fingerprint()
    assert sorted(read) == ["config.json", "model.safetensors", "train.jsonl"]
    memo = teacher_states.hash_memo_file(folder)
    assert memo == tmp_path / "teacher" / ".model.sha256.json" and memo.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert fingerprint() == first and read == ["train.jsonl"]

    weights = folder / "model.safetensors"
    before = weights.stat()
    with weights.open("r+b") as f:  # one byte changed, the size kept
        f.seek(100)
        f.write(b"\xff")
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    changed = fingerprint()
    assert changed["teacher"] != first["teacher"] and read == ["model.safetensors", "train.jsonl"]
    assert fingerprint() == changed and read == ["train.jsonl"]
    ctime = weights.stat().st_ctime_ns
    time.sleep(0.05)  # past the filesystem's timestamp granularity
    with weights.open("r+b") as f:  # changed back, and the mtime put back too: the ctime still moves
        f.seek(100)
        f.write(bytes([100]))
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_ctime_ns != ctime and weights.stat().st_mtime_ns == before.st_mtime_ns
    assert fingerprint() == first and read == ["model.safetensors", "train.jsonl"]

    memo.write_text("{not json")
    assert fingerprint() == first and sorted(read) == ["config.json", "model.safetensors", "train.jsonl"]
    memo.unlink()
    monkeypatch.setattr(teacher_states, "hash_memo_file", lambda folder: None)  # no sidecar at all
    assert fingerprint() == first and not memo.exists()
