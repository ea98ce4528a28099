import os
import tempfile

# Tests never touch the network: without these, every hub call retries for up to a minute before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MinED's vocabulary maps are cached on disk; tests keep theirs out of the user's home.
os.environ.setdefault("REPRO_CACHE", tempfile.mkdtemp(prefix="repro-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# The package's modules that the workflow imports while it builds the DAG (Snakefile, rules/*.smk at their top) or
# that `make repro` runs before it (recover): they must not pay for torch (tests/test_config.py, test_style.py).
DAG_MODULES = ("config", "schema", "validation", "verdicts", "grid", "names", "settings", "layout", "io", "analysis",
               "claims", "study", "render", "report", "estimate", "memory", "tables", "recover", "gpus", "slurm")

SMALL_SIZES = dict(seed=3, n_people=12, n_train=240, n_dev=12, n_test=dict(dolly=10, selfinst=6, vicuna=4, sni=8,
                                                                             unni=8))


def train_steps(method, student, batch, ctx, steps=6, lr=3e-3):
    """A few AdamW steps of ``method`` on one repeated batch; every logged term must stay finite. Returns the
    per-token losses, for the caller to check that they fall."""
    import torch

    from repro.data import IGNORE

    params = list(student.parameters()) + (list(ctx.modules.parameters()) if ctx.modules is not None else [])
    optimizer = torch.optim.AdamW(params, lr=lr)
    n_tokens = (batch["labels"] != IGNORE).sum()
    losses = []
    for _ in range(steps):
        terms = method.loss(student, batch, ctx)
        assert all(torch.isfinite(v).all() for v in terms.values()), terms
        (terms["loss"] / n_tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(terms["loss"].item() / n_tokens.item())
    return losses


def make_context(n_vocab: int, divergence=None, teacher=None, modules=None, **settings):
    """A ``repro.methods.Context`` for a method test: the run's settings are ``TrainSettings(lr=1e-3, epochs=1,
    **settings)`` (every other value TrainSettings' default, as in a run)."""
    from repro.methods import Context
    from repro.settings import TrainSettings

    return Context(n_vocab=n_vocab, settings=TrainSettings(lr=1e-3, epochs=1, **settings), divergence=divergence,
                   teacher=teacher, modules=modules)


def make_pair(root, tokenizers: dict, teacher=("gpt2", "gpt2"), student=("gpt2", "gpt2"), widths=(48, 32),
              seeds=(1, 1), max_positions: int = 256) -> tuple[Path, Path]:
    """A tiny teacher and student (one layer, two heads, no dropout; ``root/teacher`` and ``root/student``), each
    ``(architecture, tokenizer name)`` with the tokenizer from ``tokenizers`` (the ``trained_tokenizers`` fixture);
    a Qwen-like model's embedding rows padded beyond its tokenizer, as the real Qwen1.5's are."""
    from repro.models import init_model
    from repro.vocab import load_tokenizer

    root = Path(root)
    for role, (arch, tok), width, seed in zip(("teacher", "student"), (teacher, student), widths, seeds):
        spec = {"arch": arch, "layers": 1, "hidden": width, "heads": 2, "max_positions": max_positions,
                "dropout": 0.0, **({"pad_vocab_to_multiple_of": 64} if arch == "qwen2" else {})}
        init_model(spec, load_tokenizer(tokenizers[tok]), root / role, seed=seed)
    return root / "teacher", root / "student"


@pytest.fixture(scope="session")
def small_splits():
    from repro.synthetic import generate

    return generate(**SMALL_SIZES)


@pytest.fixture(scope="session")
def trained_tokenizers(tmp_path_factory, small_splits):
    """One tokenizer of each kind (and a digit-splitting byte-level one), trained on the small training set."""
    from repro.vocab import corpus_texts, train_tokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    specs = {"gpt2": ("byte_bpe", 400, False), "qwen": ("byte_bpe", 450, True),
             "llama": ("sentencepiece_bpe", 420, False), "mistral": ("sentencepiece_bpe", 480, False)}
    for name, (kind, size, split) in specs.items():
        train_tokenizer(kind, size, corpus_texts(small_splits["train"]), root / name, split_digits=split)
    return {name: root / name for name in specs}


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct folder (tests/real_model.py, built once and cached), or a skip saying why it
    cannot be had."""
    from real_model import Unavailable, smollm2_folder

    try:
        return smollm2_folder()
    except Unavailable as e:
        pytest.skip(str(e))
