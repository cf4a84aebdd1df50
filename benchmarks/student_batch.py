"""Sampling speed of packaged models against the batch size on the CPU (which default `Pipeline.sample` should use).

    python benchmarks/student_batch.py --models ddpm-cond-fast ldm-fast --batch-sizes 64 128 256 512

Each model draws --n digits at its own defaults per batch size, after an untimed warm-up batch; the sizes are
timed in turn, --rounds times over, and the best round counts. Writes benchmarks/results/student_batch.md (or --out).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import write_table  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["ddpm-cond-fast", "ldm-fast"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "student_batch.md")
    args = ap.parse_args()

    rows = []
    for name in args.models:
        pipe = load(name)
        best = {}
        for _ in range(args.rounds):
            for bs in args.batch_sizes:
                pipe.sample(bs, batch_size=bs, seed=10**6)  # warm-up: oneDNN picks its kernels per shape
                started = time.perf_counter()
                pipe.sample(args.n, batch_size=bs, seed=0)
                best[bs] = max(best.get(bs, 0.0), args.n / (time.perf_counter() - started))
        s = pipe.config.sample
        rows.append((name, f"{s.sampler} {s.steps} steps, guidance {s.guidance:g}", pipe.precision.precision,
                     pipe.default_batch_size, best))
        print(name, {bs: round(v, 1) for bs, v in best.items()}, flush=True)

    cmd = "python benchmarks/student_batch.py " + " ".join(sys.argv[1:])
    sizes = args.batch_sizes
    lines = [
        "# Sampling speed against the batch size on the CPU",
        "",
        f"Command: `{cmd.strip()}`",
        f"Machine: {machine_info()}",
        f"Each cell: images/s drawing {args.n} digits at the model's defaults, best of {args.rounds} rounds with the "
        "batch sizes timed in turn, after an untimed warm-up batch.",
        "",
        "| model | settings | precision | " + " | ".join(f"batch {b}" for b in sizes) + " | package default |",
        "|---|---|---|" + "---|" * len(sizes) + "---|",
    ]
    for name, settings, precision, default, best in rows:
        lines.append(f"| {name} | {settings} | {precision} | " + " | ".join(f"{best[b]:.0f}" for b in sizes)
                     + f" | {default} |")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
