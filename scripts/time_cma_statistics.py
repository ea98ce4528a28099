"""Time DSKD-CMA's per-example statistics against the teacher's work in one training epoch, side by side.

``cma_normalisation: official`` computes, once before training, the statistics of every training example as if it
were padded to ``max_length`` (one teacher forward of ``max_length`` positions per example); ``response`` needs one
forward of the example as it is. Each epoch of training then runs the teacher (no gradient) on micro batches padded
to their longest sequence, its head on the response positions. This script measures the three on the same teacher
and data, interleaved ``--repeats`` times, and prints their medians and the ratio of each statistics pass to one
epoch of teacher work.

    python scripts/time_cma_statistics.py --teacher results/runs/qwen_gpt2/teacher/model \\
        --student results/runs/gpt2/sft/model --train results/data/train.jsonl --max-length 512
"""
from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (save_pretrained folder)")
    parser.add_argument("--student", required=True, help="student checkpoint or tokenizer folder")
    parser.add_argument("--train", required=True, help="training set (processed JSONL)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8, help="training micro batch (default 8)")
    parser.add_argument("--limit", type=int, default=0, help="first N training examples only (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from repro.data import IGNORE, collate, encode_dataset, load_examples
    from repro.methods import _teacher_batch, cma_example_sums, final_hidden, head_logits
    from repro.models import load_model
    from repro.vocab import load_tokenizer

    torch.set_num_threads(args.threads)
    rows = load_examples(args.train)
    rows = rows[:args.limit] if args.limit else rows
    s_tok, t_tok = load_tokenizer(args.student), load_tokenizer(args.teacher)
    teacher = load_model(args.teacher).eval()
    encoded = encode_dataset(rows, s_tok, args.max_length, args.max_prompt_length, teacher_tokenizer=t_tok)
    n_rows = teacher.get_output_embeddings().weight.shape[0]

    def epoch():
        order = sorted(encoded, key=lambda e: len(e.input_ids))
        with torch.no_grad():
            for k in range(0, len(order), args.micro_batch):
                batch = _teacher_batch(collate(order[k:k + args.micro_batch], s_tok.pad_token_id,
                                               t_tok.pad_token_id))
                hidden = final_hidden(teacher, batch)
                head_logits(hidden[batch["labels"] != IGNORE], teacher, n_rows, detach_head=False)

    tasks = {"official": lambda: cma_example_sums(teacher, encoded, t_tok.pad_token_id, "official", args.max_length,
                                                  args.micro_batch),
             "response": lambda: cma_example_sums(teacher, encoded, t_tok.pad_token_id, "response", args.max_length,
                                                  args.micro_batch),
             "epoch": epoch}
    seconds: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(args.repeats):
        for name, task in tasks.items():
            started = time.perf_counter()
            task()
            seconds[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{len(encoded)} examples, max_length {args.max_length}, micro batch {args.micro_batch}, "
          f"{args.threads} thread(s), median of {args.repeats}:")
    for name in ("official", "response"):
        print(f"  statistics '{name}': {median[name]:.2f} s = {median[name] / median['epoch']:.2f} x one epoch of "
              f"teacher work ({median['epoch']:.2f} s)")
    if args.out:
        from repro.io import write_json

        write_json(args.out, {"examples": len(encoded), "max_length": args.max_length,
                              "micro_batch": args.micro_batch, "threads": args.threads, "seconds": seconds,
                              "median": median,
                              "ratio_to_epoch": {n: median[n] / median["epoch"] for n in ("official", "response")}})


if __name__ == "__main__":
    main()
