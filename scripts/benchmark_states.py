"""A LoRA run's resume state and the teacher-state fingerprint, before and after, side by side, as ratios.

1. Resume state. A LLaMA-shaped model (default 4 x 512 with the LLaMA-2 tokenizer's 32,000-token vocabulary, saved
   and loaded back as a checkpoint) wrapped with LoRA (default r 64 on q_proj and v_proj), one SFT optimiser step
   through ``repro.training.Trainer``, then its resume state written twice: as ``Trainer.save`` writes it (the trained
   parameters, the AdamW moments, counters, logs) and as it was written before, with the student's whole
   ``state_dict`` in place of the trained parameters. Bytes of each file and their ratio.
2. Fingerprint. ``repro.teacher_states.fingerprint`` of that checkpoint folder cold (no memo sidecar: every file
   is hashed, as every white-box cell did before) and memoised (the sidecar the cold call wrote: files are only
   stat'ed), median over rounds, and their ratio. The files were just written, so the cold reads come from the page
   cache; from a disk the cold time is longer still.
3. With ``--paper CONFIG``: the same two state sizes at the paper's shapes, counted on the meta device (no memory,
   nothing trained), for every model a pair of the config trains with LoRA: the "before" state held the fp32 base
   and the adapters' moments, the "after" one the adapters and their two moments.

    python scripts/benchmark_states.py --paper config/paper.yaml --out states.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TQDM_DISABLE", "1")

SHARED_LLAMA = Path(__file__).resolve().parent.parent.parent / "shared" / "tokenizers" / "llama2"


def _state_sizes(args, root: Path) -> dict:
    """Write the checkpoint, take one LoRA step, write the resume state after and before; their bytes."""
    import torch

    from repro.methods import get_method
    from repro.models import add_lora, init_model, load_model
    from repro.settings import TrainSettings
    from repro.synthetic import generate, write_splits
    from repro.training import Trainer, build_context
    from repro.vocab import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    layers, hidden, heads = args.model
    init_model({"arch": "llama", "layers": layers, "hidden": hidden, "heads": heads, "max_positions": 256,
                "dropout": 0.0}, tokenizer, root / "model", seed=0)
    splits = generate(seed=3, n_people=12, n_train=240, n_dev=12, n_test={"dolly": 10, "selfinst": 6, "vicuna": 4,
                                                                          "sni": 8, "unni": 8})
    write_splits(splits, root / "data")
    lora = {"rank": args.rank, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]}
    settings = TrainSettings(lr=1e-3, epochs=1, batch_size=8, micro_batch_size=8, max_length=256,
                             max_prompt_length=128, lora=lora)
    torch.manual_seed(0)
    student = add_lora(load_model(root / "model"), lora)
    method = get_method("sft")
    run = Trainer(student, tokenizer, splits["train"][:16], method, build_context(settings, tokenizer),
              root / "run")
    for _, items in run.batches(1):
        run.optimiser_step(1, items)
        break
    run.save(1, 1, run.order)
    after = run.state_path.stat().st_size
    state = torch.load(run.state_path, weights_only=False)
    state["student"] = student.state_dict()  # what the state held before: every tensor of the student
    torch.save(state, root / "before.pt")
    before = (root / "before.pt").stat().st_size
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    return {"model": {"layers": layers, "hidden": hidden, "heads": heads, "vocab": len(tokenizer),
                      "lora_rank": args.rank},
            "parameters": sum(p.numel() for p in student.parameters()), "trainable": trainable,
            "state_bytes_before": before, "state_bytes_after": after, "ratio": before / after,
            "data_file": str(root / "data" / "train.jsonl")}


def _fingerprint_times(folder: Path, data_file: str, rounds: int) -> dict:
    """Median seconds of a cold fingerprint (no sidecar) and a memoised one, in interleaved rounds."""
    from repro import teacher_states

    memo = teacher_states.hash_memo_file(folder)
    cold, warm = [], []
    for _ in range(rounds):
        memo.unlink(missing_ok=True)
        for times in (cold, warm):
            started = time.perf_counter()
            teacher_states.fingerprint(folder, data_file, 256, 128, "float32")
            times.append(time.perf_counter() - started)
    files = [p for p in folder.iterdir() if p.is_file()]
    result = {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
              "cold_s": statistics.median(cold), "memoised_s": statistics.median(warm)}
    return {**result, "ratio": result["cold_s"] / result["memoised_s"]}


def _paper_shapes(config_file: Path) -> list[dict]:
    """State sizes (fp32 numbers) at the shapes of every model a pair of ``config_file`` trains with LoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    from repro.models import add_lora, build_config
    from repro.validation import load_config

    config = load_config(config_file)
    wanted = {}
    for pair in config["pairs"].values():
        for role in ("teacher", "student"):
            lora = (pair.get(f"{role}_training") or {}).get("lora")
            if lora:
                wanted[pair[role]] = lora
    rows = []
    for name, lora in wanted.items():
        a = config["models"][name]["architecture"]
        shape = build_config(a["arch"], a["vocab_size"], a["layers"], a["hidden"], a["heads"], a.get("kv_heads"),
                             a.get("intermediate"), a.get("max_positions", 512))
        with torch.device("meta"):
            model = add_lora(AutoModelForCausalLM.from_config(shape), lora)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(t.numel() for t in model.state_dict().values())
        before, after = 4 * (total + 2 * trainable), 4 * 3 * trainable
        rows.append({"model": name, "parameters": total, "trainable": trainable, "state_bytes_before": before,
                     "state_bytes_after": after, "ratio": before / after})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=SHARED_LLAMA, help="a LLaMA-style tokenizer folder")
    parser.add_argument("--model", type=int, nargs=3, default=[4, 512, 8], metavar=("LAYERS", "HIDDEN", "HEADS"))
    parser.add_argument("--rank", type=int, default=64, help="LoRA rank (q_proj and v_proj)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paper", type=Path, help="also count the states at this config's LoRA models' shapes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not (args.tokenizer / "tokenizer_config.json").exists():
        raise SystemExit(f"{args.tokenizer}: no tokenizer (pass --tokenizer DIR)")

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="benchmark-states-") as tmp:
        root = Path(tmp)
        states = _state_sizes(args, root)
        fingerprint = _fingerprint_times(root / "model", states.pop("data_file"), args.rounds)
    m = states["model"]
    print(f"LoRA resume state: llama {m['layers']} x {m['hidden']}, vocabulary {m['vocab']}, r {m['lora_rank']} on "
          f"q/v: {states['parameters']:,} parameters, {states['trainable']:,} trained")
    print(f"  before (whole state_dict) {states['state_bytes_before']:>14,} bytes")
    print(f"  after (trained only)      {states['state_bytes_after']:>14,} bytes   before/after "
          f"{states['ratio']:.1f}x")
    print(f"teacher-state fingerprint of the checkpoint ({fingerprint['files']} files, {fingerprint['bytes']:,} "
          f"bytes), median of {args.rounds} rounds:")
    print(f"  cold (every file hashed)  {fingerprint['cold_s']:>14.4f} s")
    print(f"  memoised (stat only)      {fingerprint['memoised_s']:>14.4f} s   cold/memoised "
          f"{fingerprint['ratio']:.1f}x")
    paper = _paper_shapes(args.paper) if args.paper else []
    for row in paper:
        print(f"at the shapes of {row['model']} ({args.paper}, counted, fp32): {row['parameters']:,} parameters, "
              f"{row['trainable']:,} trained; state {row['state_bytes_before'] / 1e9:.2f} GB before, "
              f"{row['state_bytes_after'] / 1e9:.3f} GB after ({row['ratio']:.0f}x)")
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
              "state": states, "fingerprint": fingerprint, "paper_shapes": paper}
    if args.out:
        from repro.io import write_json

        write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
