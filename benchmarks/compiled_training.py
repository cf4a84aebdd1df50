"""Training speed of one recipe in fp32, bf16 autocast, channels_last and under torch.compile (train.compile).

Each variant is the package's own training step (`make_trainer` + `train_step`) from the same seed, data and
noise; the variants are timed in turn, round after round (so a busy neighbour slows all alike), median over
rounds after a warm-up that holds the compile. The mean loss of the timed steps compares the numerics at equal
steps.

    python benchmarks/compiled_training.py                         # ddpm-cond, every variant
    python benchmarks/compiled_training.py --recipe seed --rounds 2 --steps 2 --variants fp32 bf16   # small

Writes benchmarks/results/compiled_training.md (--out) with the command and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# OpenMP's waiting as under the `mnist-diffusion` command (mnist_diffusion.openmp); set before torch loads.
import mnist_diffusion  # noqa: E402, F401

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import write_table  # noqa: E402
from precision import _trainer, timed_rounds  # noqa: E402
from train_throughput import ORDER  # noqa: E402

# name -> (train.precision, further overrides)
VARIANTS = {
    "fp32": ("fp32", ()),
    "fp32 compiled": ("fp32", ("train.compile=true",)),
    "bf16": ("bf16", ()),
    "bf16 channels_last": ("bf16", ("train.channels_last=true",)),
    "bf16 compiled": ("bf16", ("train.compile=true",)),
    "bf16 channels_last compiled": ("bf16", ("train.channels_last=true", "train.compile=true")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="ddpm-cond", choices=ORDER)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (the compile happens here)")
    ap.add_argument("--data-limit", type=int, default=4096, help="training images the recipe indexes")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compiled_training.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference every ratio is taken against
    started = time.perf_counter()
    machine = machine_info()
    print(machine, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        runs, warmup_s = {}, {}
        for name in args.variants:
            precision, overrides = VARIANTS[name]
            cfg, trainer, batches = runs[name] = _trainer(args.recipe, precision, args, Path(tmp), overrides)
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                trainer.train_step(*next(batches))
            warmup_s[name] = time.perf_counter() - t0
            print(f"{name}: warm-up {warmup_s[name]:.1f} s", flush=True)
        rates, losses = timed_rounds(runs, args.steps, args.rounds, on_round=lambda r, rates: print(
            f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in rates.items()), flush=True))
        batch = runs["fp32"][0].train.batch_size
    ips = {n: statistics.median(v) for n, v in rates.items()}
    elapsed = time.perf_counter() - started
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"# Training speed: {args.recipe} in fp32, bf16, channels_last and under torch.compile", "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip()
        + f" ({elapsed / 60:.1f} min)", "",
        f"Machine: {machine}; 1-minute load average at the end {load:.1f} (other processes share the cores)", "",
        f"The package's training step, batch {batch}, {args.steps} steps x {args.rounds} rounds after {args.warmup} "
        "warm-up steps, variants in turn each round, median; bf16 = autocast with fp32 master weights; the same "
        "seed, data and noise in every variant, so the mean losses compare the numerics at equal steps. Layout: "
        "what `train.channels_last=auto` picks (channels_last in fp32 on the CPU, NCHW for the U-Nets in bf16) "
        "unless the variant says channels_last.", "",
        "| variant | images/s | / fp32 | warm-up s (compile) | mean loss |", "|---|---|---|---|---|",
    ]
    for name in runs:
        lines.append(f"| {name} | {ips[name]:.1f} | {ips[name] / ips['fp32']:.2f}x | {warmup_s[name]:.1f} | "
                     f"{statistics.fmean(losses[name]):.4f} |")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
