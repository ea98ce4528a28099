"""Sampling time of the project's decoding loop against ``transformers``' ``generate``, side by side, as ratios.

Both sample one response per prompt with the same settings (the config's test-set decoding: temperature, top-p,
top-k, no-repeat n-grams, max_new_tokens) from the same checkpoint on the same prompts, one thread, in interleaved
rounds (each variant once per round; the median over rounds is reported):

- ``generate B``: ``model.generate(do_sample=True)`` on batches of B prompts (what the project used before);
- ``loop B``: ``repro.generation.generate`` on batches of B prompts (a row leaves the batch at its EOS).

    python scripts/benchmark_generation.py results/runs/gpt2/sft/seed10/model results/data/test \
        --batch 50 200 --rounds 3 --out generation.json

A trained checkpoint matters: a random model almost never draws EOS, so no row would leave the batch early.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars between the table's lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a saved model folder with its tokenizer")
    parser.add_argument("test_dir", type=Path, help="a folder of test-set .jsonl files (every one is used)")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"),
                        help="whose evaluation settings to decode with")
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N prompts (0: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from repro.data import load_examples
    from repro.generation import DecodeSettings, generate, left_padded
    from repro.models import load_model
    from repro.validation import load_config
    from repro.vocab import load_tokenizer

    torch.set_num_threads(1)
    evaluation = load_config(args.config)["evaluation"]
    files = sorted(args.test_dir.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.test_dir}: no .jsonl test files")
    prompts = [r["prompt"] for f in files for r in load_examples(f)]
    prompts = prompts[:args.limit] if args.limit else prompts
    tokenizer, model = load_tokenizer(args.checkpoint), load_model(args.checkpoint)
    keys = ("max_new_tokens", "temperature", "top_p", "top_k", "no_repeat_ngram_size")
    base = {k: evaluation[k] for k in keys}

    def hf(batch: int) -> None:
        torch.manual_seed(10)
        with torch.no_grad():
            for start in range(0, len(prompts), batch):
                ids, mask = left_padded(tokenizer, prompts[start:start + batch], 256)
                model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=base["temperature"],
                               top_p=base["top_p"], top_k=base["top_k"],
                               no_repeat_ngram_size=base["no_repeat_ngram_size"] or None,
                               max_new_tokens=base["max_new_tokens"], pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id)

    def loop(batch: int) -> None:
        generate(model, tokenizer, prompts, 10, DecodeSettings(**base, batch_size=batch))

    variants = {f"generate {b}": (hf, b) for b in args.batch} | {f"loop {b}": (loop, b) for b in args.batch}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (fn, batch) in variants.items():
            start = time.perf_counter()
            fn(batch)
            times[name].append(time.perf_counter() - start)
    reference = statistics.median(times[f"generate {args.batch[0]}"])
    result = {"checkpoint": str(args.checkpoint), "prompts": len(prompts), "settings": base, "rounds": args.rounds,
              "seconds": {n: statistics.median(t) for n, t in times.items()}}
    result["ratio_to_generate"] = {n: s / reference for n, s in result["seconds"].items()}
    print(f"{len(prompts)} prompts from {len(files)} files, {args.rounds} rounds, one thread; "
          f"ratio to generate {args.batch[0]}")
    print(f"{'variant':<14} {'seconds':>8} {'ms/prompt':>10} {'ratio':>6}")
    for name, seconds in result["seconds"].items():
        print(f"{name:<14} {seconds:8.2f} {1000 * seconds / len(prompts):10.2f} "
              f"{result['ratio_to_generate'][name]:6.2f}")
    if args.out:
        from repro.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
