"""GPU smoke test at the paper's sizes: a few bf16 optimiser steps of vanilla KD and DSKD (KL) with randomly
initialised GPT2-1.5B (teacher) and GPT2-120M (student) shapes, then tokens per second and peak GPU memory.

Usage (one GPU, a few minutes; prints one line per method and writes JSON with --out):

    python scripts/gpu_smoke.py --steps 8 --out smoke.json

It runs the project's own code path: ``repro.methods`` losses, ``repro.training.param_groups`` (projectors in
their own group at the projector learning rate), AdamW, clipping at 1.0, bf16 autocast with fp32 master weights,
the frozen teacher held in bf16. ``--tiny`` shrinks both models so the script can be checked on a CPU.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from repro import teacher_states  # noqa: E402
from repro.data import IGNORE, Encoded  # noqa: E402
from repro.io import write_json  # noqa: E402
from repro.methods import Context, get_method  # noqa: E402
from repro.models import build_config  # noqa: E402
from repro.settings import TrainSettings  # noqa: E402
from repro.training import param_groups  # noqa: E402

GPT2_VOCAB = 50257
SHAPES = {  # (layers, hidden, heads): gpt2-xl and gpt2 (PAPER.md section 3)
    "paper": {"teacher": (48, 1600, 25), "student": (12, 768, 12)},
    "tiny": {"teacher": (2, 64, 2), "student": (1, 32, 2)},
}


def make_model(shape, vocab: int, device, dtype):
    from transformers import AutoModelForCausalLM

    layers, hidden, heads = shape
    config = build_config("gpt2", vocab, layers, hidden, heads, max_positions=1024, dropout=0.0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.to(device)


def random_batch(batch: int, length: int, vocab: int, device, generator) -> dict:
    """Random token ids, the first half of every sequence a prompt (no labels), the second half the response."""
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    labels = torch.roll(ids, -1, dims=1)
    labels[:, : length // 2] = IGNORE
    labels[:, -1] = IGNORE
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


def run_method(name: str, teacher, args, device, cached: bool = False) -> dict:
    """Timed steps of ``name``; ``cached``: the teacher read from a teacher-state cache of each batch (built before
    the step's timer starts, as a run builds it once before training)."""
    torch.manual_seed(0)
    vocab = GPT2_VOCAB if not args.tiny else 512
    student = make_model(SHAPES["tiny" if args.tiny else "paper"]["student"], vocab, device, torch.float32)
    method = get_method(name)
    ctx = Context(n_vocab=vocab, divergence="kl", teacher=teacher)
    ctx.modules = method.build(student, teacher)
    if ctx.modules is not None:
        ctx.modules.to(device)
    settings = TrainSettings(lr=5e-4, epochs=1, batch_size=args.micro_batch, micro_batch_size=args.micro_batch)
    optimizer = torch.optim.AdamW(param_groups(student, ctx.modules, settings), lr=settings.lr)
    trained = [p for g in optimizer.param_groups for p in g["params"]]
    generator = torch.Generator().manual_seed(0)
    on_gpu = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu or args.bf16_on_cpu)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    timings, losses = [], []
    for step in range(args.warmup + args.steps):
        batch = random_batch(args.micro_batch, args.seq_len, vocab, device, generator)
        if cached:
            examples = [Encoded(input_ids=batch["input_ids"][i].tolist(), labels=batch["labels"][i].tolist())
                        for i in range(args.micro_batch)]
            with autocast:
                ctx.teacher_states = teacher_states.build(teacher, examples, 0, {}, batch_size=args.micro_batch)
            batch["example_index"] = torch.arange(args.micro_batch, device=device)
        if on_gpu:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast:
            terms = method.loss(student, batch, ctx)
        n_tokens = (batch["labels"] != IGNORE).sum()
        (terms["loss"] / n_tokens).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            timings.append(time.perf_counter() - start)
            losses.append(terms["loss"].item() / n_tokens.item())
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"{name}: non-finite loss in the smoke run: {losses}")
    tokens = args.micro_batch * args.seq_len * len(timings)
    # model FLOPs per token: the student's forward and backward (6 N), the teacher's forward (2 N) or, cached, its head
    # on the response half of the tokens (2 d V / 2)
    head = teacher.get_output_embeddings().weight
    teacher_flops = head.numel() if cached else 2 * sum(p.numel() for p in teacher.parameters())
    flops_per_token = 6 * sum(p.numel() for p in student.parameters()) + teacher_flops
    tokens_per_s = tokens / sum(timings)
    result = {"method": name + ("+cache" if cached else ""), "steps": len(timings), "micro_batch": args.micro_batch,
              "seq_len": args.seq_len, "tokens_per_s": tokens_per_s, "s_per_step": sum(timings) / len(timings),
              "mfu": flops_per_token * tokens_per_s / (args.peak_tflops * 1e12) if on_gpu else None,
              "losses": losses,
              "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else None,
              "student_parameters": sum(p.numel() for p in student.parameters()),
              "projector_parameters": sum(p.numel() for p in ctx.modules.parameters()) if ctx.modules else 0}
    del student, optimizer, ctx
    if on_gpu:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["kd", "dskd"])
    parser.add_argument("--steps", type=int, default=8, help="timed optimiser steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512, help="the paper's max length")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, for checking the script on a CPU")
    parser.add_argument("--bf16-on-cpu", action="store_true", help="bf16 autocast on a CPU too")
    parser.add_argument("--cache", action="store_true", help="each method also with the teacher-state cache")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for the MFU "
                        "(989: H100/H200 SXM)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and not args.tiny:
        print("note: paper-size shapes on a CPU are very slow; use --tiny to check the script", file=sys.stderr)
    vocab = GPT2_VOCAB if not args.tiny else 512
    # The frozen teacher in bf16, as a distillation run holds it on a GPU.
    teacher = make_model(SHAPES["tiny" if args.tiny else "paper"]["teacher"], vocab, device,
                         torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
    teacher.requires_grad_(False)
    results = []
    for name in args.methods:
        for cached in (False, True) if args.cache else (False,):
            result = run_method(name, teacher, args, device, cached)
            results.append(result)
            memory = f"{result['peak_memory_gib']:.1f} GiB" if result["peak_memory_gib"] is not None else "n/a (CPU)"
            mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a"
            print(f"{result['method']:12s} tokens/s {result['tokens_per_s']:10.0f}   s/step {result['s_per_step']:.3f}"
                  f"   MFU {mfu}   peak memory {memory}   last loss {result['losses'][-1]:.3f}", flush=True)
    if args.out:
        write_json(args.out, {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "results": results})
    return results


if __name__ == "__main__":
    main()
