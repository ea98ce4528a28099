"""Step time and peak memory of every training objective, side by side, as ratios to SFT.

One training step = the method's loss on one batch + backward + AdamW, on randomly initialised GPT-2-shaped models
(default: student 2 x 128, teacher 4 x 256, a batch of 4 sequences of 128 tokens whose first 40 are the prompt),
for each vocabulary size asked for. Each (vocabulary, method) runs in a process of its own, so its peak resident
memory is its own; the processes run in interleaved rounds (every method once per round), and the step time is the
median over rounds of each process's median step. ``METHOD+cache`` reads the teacher from the teacher-state cache
(``repro.teacher_states``, built before the timed steps) instead of running its body. ``floor:DIV`` is the least a
cached KD step with divergence DIV can cost given the cache's unit (hidden states): the SFT step, plus the
teacher's head on the cached response states, plus one lean divergence pass (forward and backward) over the
response logits, each timed in the same process. Cross-vocabulary methods use a
second, permuted vocabulary of the same size for the teacher (MinED: every response position aligned one-to-one,
the map a random permutation); DSKD-CMA's statistics come from ``repro.methods.cma_example_sums`` (its official
normalisation, over max_length).

    python scripts/benchmark_steps.py --vocab 8192 50257 151936 --out benchmark.json

Prints one table per vocabulary: seconds per step, ratio to SFT, peak memory (MB) and its ratio to SFT.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_METHODS = ["sft", "kd:kl", "kd:js", "kd:akl", "dskd:kl", "dskd:js", "dskd:akl", "dskd_cma:kl", "uld",
                   "mined", "kd:kl+cache", "kd:akl+cache", "dskd:kl+cache", "dskd_cma:kl+cache", "uld+cache",
                   "mined+cache"]


def _child(args) -> dict:
    """One (vocabulary, method): build the models, take the steps, report times and peak memory."""
    import resource

    import torch
    from transformers import AutoModelForCausalLM

    from repro.alignment import first_teacher_ids
    from repro.data import IGNORE, Encoded
    from repro.methods import Context, get_method
    from repro.models import build_config
    from repro.settings import TrainSettings
    from repro.training import param_groups

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec, cached = args.child.removesuffix("+cache"), args.child.endswith("+cache")
    name, _, divergence = spec.partition(":")
    floor = name == "floor"
    if floor:  # the SFT step, with the teacher's head and one divergence pass timed beside it
        name, cached = "kd", True
    method = get_method(name)
    vocab, (b, length, prompt) = args.vocab[0], (args.batch, args.length, args.prompt)

    def model(layers, hidden, heads):
        config = build_config("gpt2", vocab, layers, hidden, heads, max_positions=max(512, length), dropout=0.0)
        return AutoModelForCausalLM.from_config(config)

    student = model(*args.student)
    teacher = model(*args.teacher).eval().requires_grad_(False) if method.needs_teacher else None
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (b, length + 1), generator=generator)
    labels = ids[:, 1:].clone()
    labels[:, : prompt - 1] = IGNORE
    batch = {"input_ids": ids[:, :-1], "attention_mask": torch.ones(b, length, dtype=torch.long), "labels": labels}
    settings = TrainSettings(lr=1e-3, epochs=1, max_length=max(512, length))
    ctx = Context(n_vocab=vocab, settings=settings, divergence=divergence or None, teacher=teacher)
    if method.cross_vocab:
        permutation = torch.randperm(vocab, generator=generator)
        batch.update(teacher_input_ids=permutation[batch["input_ids"]], teacher_attention_mask=batch["attention_mask"],
                     teacher_labels=torch.where(labels == IGNORE, IGNORE, permutation[labels.clamp_min(0)]))
        ctx.teacher_n_vocab = vocab
        if name == "mined":
            ctx.vocab_map = torch.argsort(permutation)  # teacher id -> student id
            ctx.first_ids = first_teacher_ids(ctx.vocab_map, vocab)
            batch["teacher_positions"] = torch.where(labels == IGNORE, -1, torch.arange(length).expand(b, -1))
        if name == "dskd_cma":
            from repro.methods import cma_example_sums

            items = [Encoded(input_ids=[], labels=[],
                             teacher=Encoded(input_ids=batch["teacher_input_ids"][i].tolist(),
                                             labels=batch["teacher_labels"][i].tolist())) for i in range(b)]
            for item, sums in zip(items, cma_example_sums(teacher, items, 0, "official", ctx.max_length)):
                item.cma_sums = sums
            method.begin_step(items, ctx)
    if cached and teacher is not None:  # the teacher-state cache of this batch: the teacher's body never runs
        from repro import teacher_states

        side = "teacher_" if method.cross_vocab else ""
        examples = [Encoded(input_ids=batch[f"{side}input_ids"][i].tolist(), labels=batch[f"{side}labels"][i].tolist())
                    for i in range(b)]
        ctx.teacher_states = teacher_states.build(teacher, examples, 0, {})
        batch["example_index"] = torch.arange(b)
    if black_box := method.black_box:  # SeqKD trains as SFT on the teacher's text: the same step as SFT
        method = get_method("sft")
    extra = None
    if floor:
        from repro.lean import LEAN
        from repro.methods import head_logits, teacher_hidden_rows

        method = get_method("sft")
        states = teacher_hidden_rows(ctx, batch)
        z_s = torch.randn(states.shape[0], vocab, generator=generator).requires_grad_(True)  # made once, untimed

        def extra():
            """The teacher's head on the cached states and one lean divergence pass over the response logits."""
            with torch.no_grad():
                z_t = head_logits(states, teacher, vocab, detach_head=False)
            LEAN[divergence](z_s, z_t, 2.0).sum().backward()
            z_s.grad = None
    ctx.modules = method.build(student, teacher)
    settings = TrainSettings(lr=1e-4, epochs=1, batch_size=b, micro_batch_size=b)
    optimizer = torch.optim.AdamW(param_groups(student, ctx.modules, settings), lr=1e-4)
    n_tokens = (labels != IGNORE).sum()
    times = []
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        terms = method.loss(student, batch, ctx)
        (terms["loss"] / n_tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if extra is not None:
            extra()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": args.child, "vocab": vocab, "seconds": times, "median_s": statistics.median(times),
            "peak_mb": peak_kb / 1024, "black_box": black_box}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[50257])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="method or method:divergence")
    parser.add_argument("--student", type=int, nargs=3, default=[2, 128, 2], metavar=("LAYERS", "HIDDEN", "HEADS"))
    parser.add_argument("--teacher", type=int, nargs=3, default=[4, 256, 4], metavar=("LAYERS", "HIDDEN", "HEADS"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=40, help="prompt positions of every sequence")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every method once per round)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write every measurement to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.rounds):
        for vocab in args.vocab:
            for name in args.methods:
                command = [sys.executable, __file__, "--child", name, "--vocab", str(vocab), "--student",
                           *map(str, args.student), "--teacher", *map(str, args.teacher), "--batch", str(args.batch),
                           "--length", str(args.length), "--prompt", str(args.prompt), "--steps", str(args.steps),
                           "--warmup", str(args.warmup), "--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} at vocabulary {vocab} failed:\n{done.stderr[-3000:]}")
                runs.setdefault((vocab, name), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = []
    for vocab in args.vocab:
        summary = {name: {"median_s": statistics.median(r["median_s"] for r in runs[(vocab, name)]),
                          "peak_mb": statistics.median(r["peak_mb"] for r in runs[(vocab, name)])}
                   for name in args.methods}
        base = summary.get("sft")
        print(f"\nvocabulary {vocab}: student {args.student}, teacher {args.teacher}, batch {args.batch} x "
              f"{args.length} ({args.prompt} prompt positions), {args.threads} thread(s), median of {args.rounds} "
              f"rounds x {args.steps} steps")
        print(f"{'method':<20}{'s/step':>9}{'x SFT':>8}{'peak MB':>10}{'x SFT':>8}")
        for name, m in summary.items():
            time_ratio = f"{m['median_s'] / base['median_s']:.2f}" if base else "-"
            memory_ratio = f"{m['peak_mb'] / base['peak_mb']:.2f}" if base else "-"
            print(f"{name:<20}{m['median_s']:>9.3f}{time_ratio:>8}{m['peak_mb']:>10.0f}{memory_ratio:>8}")
            results.append({"vocab": vocab, "method": name, **m, "runs": runs[(vocab, name)]})
    if args.out:
        from repro.io import write_json

        write_json(args.out, {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")},
                              "results": results})


if __name__ == "__main__":
    main()
