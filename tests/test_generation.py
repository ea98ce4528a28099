"""The project's decoding loop (repro.generation.decode_batch) against ``transformers``' ``generate``: the same
tokens, drawn or greedy, on left-padded batches of the four architectures, rows leaving the batch at EOS."""
from collections import Counter

import pytest
import torch

from repro.generation import DecodeSettings, decode_batch, generate, left_padded
from repro.models import init_model, load_model
from repro.vocab import load_tokenizer


@pytest.fixture(scope="module", params=[("gpt2", "gpt2"), ("llama", "llama"), ("mistral", "mistral"),
                                        ("qwen2", "qwen")], ids=lambda p: p[0])
def model_and_tokenizer(request, tmp_path_factory, trained_tokenizers):
    arch, tokenizer = request.param
    path = tmp_path_factory.mktemp("decode") / arch
    tok = load_tokenizer(trained_tokenizers[tokenizer])
    init_model({"arch": arch, "layers": 2, "hidden": 32, "heads": 2, "max_positions": 256, "dropout": 0.0}, tok,
               path, seed=3)
    return load_model(path), tok


def _prompts(small_splits, n):
    return [r["prompt"] for r in small_splits["dev"][:n]]


def test_one_prompt_per_batch_draws_what_generate_draws(model_and_tokenizer, small_splits):
    model, tok = model_and_tokenizer
    settings = DecodeSettings(max_new_tokens=12, temperature=0.8, top_k=40, top_p=0.9, no_repeat_ngram_size=2,
                              batch_size=1)
    prompts = _prompts(small_splits, 3)
    ours = generate(model, tok, prompts, 10, settings)
    theirs = []
    torch.manual_seed(10)
    with torch.no_grad():
        for p in prompts:
            ids, mask = left_padded(tok, [p], settings.max_prompt_length)
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_k=40,
                                 top_p=0.9, no_repeat_ngram_size=2, max_new_tokens=12,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            theirs.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert ours == theirs and any(ours)


def test_a_padded_batch_decodes_greedily_as_generate(model_and_tokenizer, small_splits):
    """Greedy picks on a left-padded batch of prompts of different lengths: every row's tokens are those of
    ``generate(do_sample=False)`` up to its first EOS, so padding, positions, the cache and the n-gram ban agree
    while rows leave the batch. EOS is set to the token the model picks most often, so rows stop at different
    steps."""
    model, tok = model_and_tokenizer
    prompts = _prompts(small_splits, 6)
    ids, mask = left_padded(tok, prompts, 256)
    assert len(set(mask.sum(-1).tolist())) > 1, "the prompts should have different lengths"
    settings = DecodeSettings(max_new_tokens=16, no_repeat_ngram_size=3, batch_size=6)

    def greedy(probs):
        return probs.argmax(-1)

    with torch.no_grad():
        free = decode_batch(model, ids, mask, settings, eos_id=-1, pick=greedy)  # no EOS: the full length
        eos = Counter(t for row in free for t in row[1:]).most_common(1)[0][0]
        ours = decode_batch(model, ids, mask, settings, eos_id=eos, pick=greedy)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, no_repeat_ngram_size=3,
                             max_new_tokens=16, pad_token_id=tok.pad_token_id, eos_token_id=eos)
    stopped = 0
    for row, mine in zip(out[:, ids.shape[1]:].tolist(), ours, strict=True):
        expected = row[:row.index(eos) + 1] if eos in row else row
        assert mine == expected
        stopped += len(mine) < 16
    assert stopped >= 1, "some row should have left the batch early"
    assert [len(r) for r in free] == [16] * len(prompts)
