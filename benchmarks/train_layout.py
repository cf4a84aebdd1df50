"""Training speed in NCHW against channels_last (NHWC), every recipe, at the numerics given: what
`train.channels_last=auto` is based on (`mnist_diffusion.training.layout`).

Each pair is the package's own training step (`make_trainer` + `train_step`) from the same seed, data and noise,
the two layouts timed in turn round after round (so a busy neighbour slows both alike), median over rounds after
warm-up; the mean loss of the timed steps shows the layout changes nothing that is learned.

    python benchmarks/train_layout.py                                  # every recipe, fp32
    python benchmarks/train_layout.py --precisions fp32 bf16 --recipes ddpm-cond
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/train_layout.py --out ..._avx2.md
        # torch's and oneDNN's kernels held to AVX2 on a newer CPU (an approximation of an AVX2 processor)

Writes benchmarks/results/train_layout.md (--out) with the command and the machine.
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mnist_diffusion  # noqa: E402, F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import header, write_table  # noqa: E402
from mnist_diffusion.config import with_changes  # noqa: E402
from mnist_diffusion.training.layout import resolve_layout  # noqa: E402
from precision import _trainer, timed_rounds  # noqa: E402
from train_throughput import ORDER  # noqa: E402

LAYOUTS = {"NCHW": "false", "channels_last": "true"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=list(ORDER), choices=ORDER)
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per layout and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--data-limit", type=int, default=2048, help="training images the recipe indexes")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_layout.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine = machine_info()
    print(machine, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            for precision in args.precisions:
                runs = {}
                for layout, value in LAYOUTS.items():
                    overrides = (f"train.channels_last={value}",)
                    runs[layout] = _trainer(recipe, precision, args, Path(tmp) / f"{recipe}-{precision}-{layout}",
                                            overrides)
                    for _ in range(args.warmup):
                        runs[layout][1].train_step(*next(runs[layout][2]))
                rates, losses = timed_rounds(runs, args.steps, args.rounds)
                ips = {n: statistics.median(v) for n, v in rates.items()}
                cfg = runs["NCHW"][0]
                auto = resolve_layout(with_changes(cfg, train={"channels_last": "auto"}), torch.device("cpu"))
                rows.append((recipe, precision, cfg.train.batch_size, ips, {n: statistics.fmean(v) for n, v in
                                                                            losses.items()}, auto))
                print(f"{recipe} {precision}: NCHW {ips['NCHW']:.1f}, channels_last {ips['channels_last']:.1f} "
                      f"images/s ({ips['channels_last'] / ips['NCHW']:.2f}x)", flush=True)
    lines = [
        *header("Training speed: NCHW against channels_last", started),
        f"The package's training step, {args.steps} steps x {args.rounds} rounds after {args.warmup} warm-up steps, "
        "the two layouts in turn each round, median images/s; the same seed, data and noise in both, so the mean "
        "losses compare them at equal steps. `auto`: what `train.channels_last=auto` picks for that recipe and "
        "numerics on this CPU.", "",
        "| recipe | numerics | batch | NCHW images/s | channels_last images/s | channels_last / NCHW "
        "| mean loss NCHW / channels_last | `auto` picks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for recipe, precision, batch, ips, loss, auto in rows:
        lines.append(f"| {recipe} | {precision} | {batch} | {ips['NCHW']:.1f} | {ips['channels_last']:.1f} | "
                     f"{ips['channels_last'] / ips['NCHW']:.2f}x | {loss['NCHW']:.4f} / {loss['channels_last']:.4f} "
                     f"| {'channels_last' if auto.channels_last else 'NCHW'} |")
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
