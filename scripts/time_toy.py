"""Time Figure 1's toy simulation at a configuration's sizes and extrapolate to its repetitions.

Runs ``--measure`` repetitions (default 1) of every divergence of the config, both settings, at the config's
``figures.toy`` sizes, and prints seconds per divergence and repetition and the extrapolated total for the
configured number of repetitions (the simulation's cost is linear in them: they are independent problems).

    python scripts/time_toy.py config/paper.yaml --threads 2
"""
from __future__ import annotations

import argparse
import time

from repro import grid
from repro.settings import ToySettings
from repro.toy import run_toy
from repro.validation import load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="workflow configuration (YAML)")
    parser.add_argument("--measure", type=int, default=1, help="repetitions to time (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", help="also write the measurements to this JSON file")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    sizes = grid.figure_settings(config, "toy")
    settings = ToySettings(**{**sizes, "repetitions": args.measure, "chunk": args.measure}, threads=args.threads)
    per_divergence = {}
    for name in config["divergences"]:
        started = time.perf_counter()
        run_toy([name], settings, progress=False)
        per_divergence[name] = (time.perf_counter() - started) / args.measure
        print(f"{name}: {per_divergence[name]:.1f} s per repetition (both settings)", flush=True)
    total = sum(per_divergence.values()) * sizes["repetitions"]
    print(f"extrapolated to {sizes['repetitions']} repetitions: {total / 3600:.2f} h on {args.threads} thread(s)")
    if args.out:
        from repro.io import write_json

        write_json(args.out, {"config": args.config, "sizes": sizes, "threads": args.threads,
                              "seconds_per_repetition": per_divergence, "extrapolated_seconds": total})


if __name__ == "__main__":
    main()
