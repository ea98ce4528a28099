"""Time MinED's DTW alignment of a training set at the paper's size, the plain computation and the project's, side by
side.

A MinED cell aligns every training example once before training (``MinED.prepare`` -> ``align_dataset``): the
student's and the teacher's tokenisation of it, by DTW over the response tokens (PAPER.md section 2). This script
takes real Dolly rows (every ``*.jsonl`` of ``--data``, cycled up to ``--n`` examples: the paper trains on 11.4k),
tokenises them with the real teacher and student tokenizers as a cell does (``repro.data.encode_dataset`` with the
teacher's tokenizer), and aligns them
- with the plain computation (``tests/plain.py``'s ``align_positions``: the cell-by-cell DTW in Python, the code
  before the batched one; its cost matrices on ``--old-workers`` rapidfuzz threads, -1 (every core) as that code
  had them) on ``--old-n`` examples spread evenly over the set, extrapolated linearly to ``--n``;
- with ``repro.alignment.align_examples`` (the batched DTW) on the same ``--old-n`` examples, checked identical to
  the plain result, and on all ``--n``.
The vocabulary map is computed for the teacher ids the examples use only (the full map is cached on disk by a cell
and does not enter the alignment's time). Prints wall-clock and CPU seconds (the CPU time of this process, all its
threads: steadier than the wall clock on a shared machine) and their ratios; ``--out`` also writes them as JSON.

    python scripts/benchmark_mined.py --n 11400 --old-n 640 --threads 1 --old-workers -1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # plain.py, the reference computation

SHARED = REPO.parent / "shared"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED / "data" / "minillm" / "dolly"),
                        help="folder of processed JSONL rows (every *.jsonl is read)")
    parser.add_argument("--teacher", default=str(SHARED / "tokenizers" / "qwen1.5"), help="teacher tokenizer")
    parser.add_argument("--student", default=str(SHARED / "tokenizers" / "gpt2"), help="student tokenizer")
    parser.add_argument("--n", type=int, default=11400, help="examples aligned (rows cycled up to it; default 11400)")
    parser.add_argument("--old-n", type=int, default=640, help="examples aligned by the plain computation")
    parser.add_argument("--tokens", default="input", choices=["input", "label"], help="MinED's aligned tokens")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--max-prompt-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--old-workers", type=int, default=-1,
                        help="rapidfuzz threads of the plain computation (default -1, as the code before had them)")
    parser.add_argument("--out", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    if not 1 <= args.old_n <= args.n:
        parser.error(f"--old-n must be between 1 and --n ({args.n}), got {args.old_n}")

    import numpy as np
    import plain
    import torch

    from repro.alignment import align_examples, token_strings, vocab_mapping
    from repro.data import IGNORE, encode_dataset, load_examples
    from repro.vocab import load_tokenizer

    torch.set_num_threads(args.threads)
    files = sorted(Path(args.data).glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.data}: no *.jsonl files")
    source = [row for path in files for row in load_examples(path)]
    rows = [source[k % len(source)] for k in range(args.n)]
    teacher, student = load_tokenizer(args.teacher), load_tokenizer(args.student)
    start = time.perf_counter()
    encoded = encode_dataset(rows, student, args.max_length, args.max_prompt_length, teacher_tokenizer=teacher)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    s_strings, t_strings = token_strings(student), token_strings(teacher)
    strings_s = time.perf_counter() - start
    used = sorted({t for e in encoded for t in e.teacher.input_ids + e.teacher.labels if t != IGNORE})
    vocab_map = np.full(len(teacher), -1, dtype=np.int64)
    vocab_map[used] = vocab_mapping(teacher, student, teacher_ids=used, workers=args.threads)
    examples = [(e.input_ids, e.labels, e.teacher.input_ids, e.teacher.labels) for e in encoded]
    sample = [examples[k] for k in np.linspace(0, args.n - 1, args.old_n).round().astype(int)]

    def timed(run):
        wall, cpu = time.perf_counter(), time.process_time()
        out = run()
        return out, time.perf_counter() - wall, time.process_time() - cpu

    old, old_s, old_cpu = timed(lambda: [plain.align_positions(*example, s_strings, t_strings, vocab_map, args.tokens,
                                                               workers=args.old_workers) for example in sample])
    new_sample, new_sample_s, new_sample_cpu = timed(
        lambda: align_examples(sample, s_strings, t_strings, vocab_map, args.tokens))
    if new_sample != old:
        raise SystemExit("the batched alignment differs from the plain one")
    new, new_s, new_cpu = timed(lambda: align_examples(examples, s_strings, t_strings, vocab_map, args.tokens))
    scale = args.n / args.old_n
    response = sum(label != IGNORE for e in encoded for label in e.labels)
    result = {
        "n": args.n, "old_n": args.old_n, "tokens": args.tokens, "threads": args.threads,
        "old_workers": args.old_workers, "distinct_rows": min(len(source), args.n),
        "student_response_tokens": response, "aligned_share": sum(j >= 0 for row in new for j in row) / response,
        "encode_s": encode_s, "token_strings_s": strings_s,
        "old_s_at_old_n": old_s, "new_s_at_old_n": new_sample_s, "ratio_at_old_n": old_s / new_sample_s,
        "old_cpu_s_at_old_n": old_cpu, "new_cpu_s_at_old_n": new_sample_cpu,
        "new_s": new_s, "old_s_extrapolated": old_s * scale, "ratio": old_s * scale / new_s,
        "new_cpu_s": new_cpu, "old_cpu_s_extrapolated": old_cpu * scale, "cpu_ratio": old_cpu * scale / new_cpu,
    }
    print(f"{args.n} examples ({result['distinct_rows']} distinct rows), {response} student response tokens, "
          f"aligned one-to-one {result['aligned_share']:.3f}; torch threads {args.threads}, plain computation's "
          f"rapidfuzz workers {args.old_workers}")
    print(f"tokenising {encode_s:.1f} s, token strings {strings_s:.2f} s (both paid by either alignment)")
    print(f"{args.old_n} examples: plain {old_s:.2f} s ({old_cpu:.2f} s CPU), batched {new_sample_s:.3f} s "
          f"({new_sample_cpu:.3f} s CPU), ratio {result['ratio_at_old_n']:.0f}x (identical results)")
    print(f"{args.n} examples: plain {old_s * scale:.1f} s ({old_cpu * scale:.1f} s CPU; extrapolated from "
          f"{args.old_n}), batched {new_s:.2f} s ({new_cpu:.2f} s CPU), ratio {result['ratio']:.0f}x "
          f"({result['cpu_ratio']:.0f}x CPU)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
