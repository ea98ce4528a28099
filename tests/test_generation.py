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


def _largest_allocation(model, ids, mask, settings, eos) -> int:
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, \
            torch.autocast("cpu", dtype=torch.bfloat16):
        decode_batch(model, ids, mask, settings, eos, lambda probs: probs.argmax(-1))
    return max(e.cpu_memory_usage for e in prof.events() if e.name in ("aten::empty", "aten::empty_strided"))


def test_a_frozen_bf16_head_is_never_copied_per_sequence_by_the_prompts_forward(tmp_path, trained_tokenizers,
                                                                                  small_splits, monkeypatch):
    """Under bf16 the prompt's forward asks for its last position with an index tensor (``last_position``): the
    head's input is then contiguous and a frozen head (a LoRA model's, a teacher's) is one matrix product, where the
    strided slice of ``logits_to_keep=1`` made ``aten::matmul`` copy the head's weight once per sequence (the
    allocation of batch x hidden x rows bf16 values, seen here with the integer). The logits are the same
    distribution to bf16's rounding, and the same greedy tokens here; in fp32 the integer is kept (the miniature's
    samples)."""
    from repro import generation
    from repro.models import add_lora

    tok = load_tokenizer(trained_tokenizers["llama"])
    init_model({"arch": "llama", "layers": 1, "hidden": 64, "heads": 2, "max_positions": 256, "dropout": 0.0,
                "vocab_size": 16384}, tok, tmp_path / "m", seed=3)  # (a head far larger than the activations)
    model = add_lora(load_model(tmp_path / "m", "bfloat16"),
                     {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}).eval()
    head = model.get_output_embeddings().weight
    assert not head.requires_grad and head.dtype == torch.bfloat16
    prompts = _prompts(small_splits, 8)
    ids, mask = left_padded(tok, prompts, 256)
    settings = DecodeSettings(max_new_tokens=4, no_repeat_ngram_size=0, batch_size=8)
    copy = len(prompts) * head.numel() * 2
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert isinstance(generation.last_position(model, ids), torch.Tensor)
        indexed = decode_batch(model, ids, mask, settings, -1, lambda probs: probs.argmax(-1))
    assert _largest_allocation(model, ids, mask, settings, -1) < copy / 4
    monkeypatch.setattr(generation, "last_position", lambda model, ids: 1)
    assert _largest_allocation(model, ids, mask, settings, -1) >= copy  # the integer's copy, which the test would see
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert decode_batch(model, ids, mask, settings, -1, lambda probs: probs.argmax(-1)) == indexed
    # in fp32 the integer, whatever the model
    assert generation.last_position(load_model(tmp_path / "m"), ids) == 1
