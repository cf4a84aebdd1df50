"""Fewer and smaller fresh maps while drawing digits: GroupNorm of bf16 channels_last maps a cache-sized chunk of
the batch at a time (`models.blocks.CHUNK_BYTES`), and ResBlock's SiLUs and adds written into the maps they read
(`models.blocks.INPLACE_INFERENCE`), each against the form before it, and whether the digits stay the same.

1. Variants: the package as it is, without the chunks (the whole batch at once), without the in-place writes,
   and without either, for each packaged model in fp32 and bf16 at its defaults.
2. Chunk sizes (bf16): the whole batch, 256 KB ... 8 MB.
Everything of one table is timed in turn, round after round, in one process (so a busy neighbour slows all
alike), median over rounds after a warm-up call each.

    python benchmarks/inference_memory.py
    python benchmarks/inference_memory.py --models ddpm-cond --rounds 4 --out /tmp/mem.md

Writes benchmarks/results/inference_memory.md (--out) with the command and the machine.
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mnist_diffusion  # noqa: E402, F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import header, write_table  # noqa: E402
from mnist_diffusion.models import blocks  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402

WHOLE = 1 << 62  # a chunk larger than any batch: the whole batch in one pass
DEFAULTS = {"CHUNK_BYTES": blocks.CHUNK_BYTES, "INPLACE_INFERENCE": blocks.INPLACE_INFERENCE}
VARIANTS = {  # name -> settings of models.blocks
    "as it is": {},
    "no chunks": {"CHUNK_BYTES": WHOLE},
    "no in-place": {"INPLACE_INFERENCE": False},
    "neither": {"CHUNK_BYTES": WHOLE, "INPLACE_INFERENCE": False},
}


def size_name(size: int) -> str:
    return "whole batch" if size == WHOLE else f"{size >> 10} KB" if size < 1 << 20 else f"{size >> 20} MB"


CHUNKS = {size_name(s): {"CHUNK_BYTES": s} for s in (WHOLE, 1 << 18, 1 << 20, 1 << 21, 1 << 22, 1 << 23)}


def settle(settings: dict) -> None:
    for key, default in DEFAULTS.items():
        setattr(blocks, key, settings.get(key, default))


def timed(pipe, n: int, variants: dict, rounds: int) -> tuple[dict, bool]:
    """Median images/s of each variant (name -> settings), and whether all drew the same digits."""
    images, rates = {}, {name: [] for name in variants}
    for name, settings in variants.items():
        settle(settings)
        images[name] = pipe.sample(n, seed=1).images  # also the warm-up
    for _ in range(rounds):
        for name, settings in variants.items():
            settle(settings)
            t0 = time.perf_counter()
            pipe.sample(n, seed=1)
            rates[name].append(n / (time.perf_counter() - t0))
    settle({})
    first = next(iter(images.values()))
    return {name: statistics.median(v) for name, v in rates.items()}, all(
        np.array_equal(im, first) for im in images.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["ddpm-cond", "ldm"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--n", type=int, default=64, help="digits per sampling call (one batch at the CPU default)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inference_memory.md")
    args = ap.parse_args()
    started = time.perf_counter()
    machine = machine_info()
    print(machine, flush=True)
    variant_rows, chunk_rows = [], []
    for model in args.models:
        for precision in args.precisions:
            pipe = load(model, precision=precision)
            ips, same = timed(pipe, args.n, VARIANTS, args.rounds)
            variant_rows.append((model, precision, ips, same))
            print(model, precision, {k: round(v, 1) for k, v in ips.items()}, same, flush=True)
            if precision == "bf16":  # the chunks apply to bf16 maps only
                ips, same = timed(pipe, args.n, CHUNKS, args.rounds)
                chunk_rows.append((model, ips, same))
                print(model, "chunks", {k: round(v, 1) for k, v in ips.items()}, same, flush=True)
    lines = [
        *header("Drawing digits with fewer and smaller fresh maps", started),
        f"Each packaged model sampled at its defaults, {args.n} digits a call, the columns of a row in turn for "
        f"{args.rounds} rounds, median images/s; `same digits`: every column drew exactly the same digits. "
        f"Chunks: GroupNorm of bf16 channels_last maps {size_name(DEFAULTS['CHUNK_BYTES'])} of the batch at a "
        "time; in-place: ResBlock's SiLUs and adds written into the maps they read.", "",
        "## The package against the forms before it", "",
        "| model | numerics | " + " | ".join(f"{v} images/s" for v in VARIANTS) + " | as it is / neither | same digits |",
        "|---|---|" + "---|" * (len(VARIANTS) + 2),
    ]
    for model, precision, ips, same in variant_rows:
        lines.append(f"| {model} | {precision} | " + " | ".join(f"{ips[v]:.1f}" for v in VARIANTS)
                     + f" | {ips['as it is'] / ips['neither']:.2f}x | {'yes' if same else 'no'} |")
    default = size_name(DEFAULTS["CHUNK_BYTES"])
    lines += ["", "## Chunk sizes (bf16, in-place on)", "",
              "| model | " + " | ".join(f"{c} images/s" for c in CHUNKS) + f" | {default} / whole | same digits |",
              "|---|" + "---|" * (len(CHUNKS) + 2)]
    for model, ips, same in chunk_rows:
        lines.append(f"| {model} | " + " | ".join(f"{ips[c]:.1f}" for c in CHUNKS)
                     + f" | {ips[default] / ips['whole batch']:.2f}x | {'yes' if same else 'no'} |")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
