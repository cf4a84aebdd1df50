"""`mnist-diffusion figures`: the figures of a run directory as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_diffusion.errors import UserError
from mnist_diffusion.figures import write_figures


def register(sub) -> None:
    p = sub.add_parser(
        "figures",
        help="draw a run's figures (PNG)",
        description="Draw the figures of a run: for seed runs the tutorial's corruption, one-shot denoising and "
        "sampling-step figures; for DDPM runs the x0 prediction per step, SNR curve and guidance sweep; "
        "the training-loss curves for both.",
    )
    p.add_argument("run_dir", type=Path, help="run directory")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/figures)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise UserError(f"{args.run_dir} is not a run directory; give the folder `train --out` wrote.")
    for path in write_figures(args.run_dir, args.out, seed=args.seed):
        print(path)
    return 0
