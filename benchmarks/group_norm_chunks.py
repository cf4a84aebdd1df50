"""GroupNorm of bf16 channels_last maps a cache-sized chunk of the batch at a time (`models.blocks.CHUNK_BYTES`)
against the whole batch at once: images/s of the packaged models sampled in bf16 at their defaults, and whether
the digits are the same.

The chunk sizes are timed in turn, round after round, in one process (so a busy neighbour slows all alike),
median over rounds after a warm-up call each.

    python benchmarks/group_norm_chunks.py
    python benchmarks/group_norm_chunks.py --models ddpm-cond --rounds 4 --out /tmp/gn.md

Writes benchmarks/results/group_norm_chunks.md (--out) with the command and the machine.
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import mnist_diffusion  # noqa: E402, F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import write_table  # noqa: E402
from mnist_diffusion.models import blocks  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402

WHOLE = 1 << 62  # a chunk larger than any batch: the whole batch in one pass


def size_name(size: int) -> str:
    return "whole batch" if size == WHOLE else f"{size >> 10} KB" if size < 1 << 20 else f"{size >> 20} MB"


SIZES = {size_name(s): s for s in (WHOLE, 1 << 18, 1 << 20, 1 << 21, 1 << 22, 1 << 23)}
DEFAULT_NAME = size_name(blocks.CHUNK_BYTES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["ddpm-cond", "ldm"])
    ap.add_argument("--n", type=int, default=64, help="digits per sampling call (one batch at the CPU default)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "group_norm_chunks.md")
    args = ap.parse_args()
    started = time.perf_counter()
    machine = machine_info()
    print(machine, flush=True)
    default = blocks.CHUNK_BYTES
    rows = []
    for model in args.models:
        pipe = load(model, precision="bf16")
        images, rates = {}, {name: [] for name in SIZES}
        for name, size in SIZES.items():
            blocks.CHUNK_BYTES = size
            images[name] = pipe.sample(args.n, seed=1).images
        for _ in range(args.rounds):
            for name, size in SIZES.items():
                blocks.CHUNK_BYTES = size
                t0 = time.perf_counter()
                pipe.sample(args.n, seed=1)
                rates[name].append(args.n / (time.perf_counter() - t0))
        blocks.CHUNK_BYTES = default
        ips = {name: statistics.median(v) for name, v in rates.items()}
        same = all(np.array_equal(images[name], images["whole batch"]) for name in SIZES)
        rows.append((model, ips, same))
        print(model, {k: round(v, 1) for k, v in ips.items()}, "same digits" if same else "DIGITS DIFFER", flush=True)
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    head = " | ".join(f"{name} images/s" for name in SIZES)
    lines = [
        "# GroupNorm of bf16 channels_last maps: a chunk of the batch at a time against the whole batch", "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip()
        + f" ({(time.perf_counter() - started) / 60:.1f} min)", "",
        f"Machine: {machine}; 1-minute load average at the end {load_avg:.1f}", "",
        f"Each packaged model sampled in bf16 at its defaults, {args.n} digits a call, the chunk sizes in turn for "
        f"{args.rounds} rounds, median; `same digits`: every chunk size drew exactly the whole batch's digits.", "",
        f"| model | {head} | default ({DEFAULT_NAME}) / whole | same digits |", "|---|" + "---|" * (len(SIZES) + 2),
    ]
    for model, ips, same in rows:
        cells = " | ".join(f"{ips[name]:.1f}" for name in SIZES)
        lines.append(f"| {model} | {cells} | {ips[DEFAULT_NAME] / ips['whole batch']:.2f}x | "
                     f"{'yes' if same else 'no'} |")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
