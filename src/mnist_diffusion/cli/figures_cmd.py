"""`mnist-diffusion figures`: the figures of a run directory, a model file or a packaged model, as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_diffusion import assets
from mnist_diffusion.cli.options import add_seed_option
from mnist_diffusion.errors import UserError


def _packaged() -> str:
    return ", ".join(name for name, asset in assets.PACKAGED.items() if asset.kind != "evaluator")


def register(sub) -> None:
    names = _packaged()
    p = sub.add_parser(
        "figures",
        help="draw the figures of a run or a model (PNG)",
        description="Draw the figures of a run directory, a .safetensors model file or a packaged model "
        f"({names}): for seed runs the tutorial's corruption, one-shot denoising and sampling-step figures; for "
        "DDPM models the forward process, x_t and the x0 estimate per step, the SNR curve and the guidance "
        "sweep; for latent models and autoencoders the reconstructions, latent channels and an interpolation; "
        "for runs also the training loss and, where logged, KID over training.",
    )
    p.add_argument("run_dir", metavar="SOURCE", help=f"run directory, model file or packaged name ({names})")
    p.add_argument(
        "--out", type=Path, help="output folder (default RUN_DIR/figures, or ./figures-NAME for a packaged model)"
    )
    add_seed_option(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_diffusion.figures import default_out_dir, write_figures  # here: figures imports matplotlib

    source = args.run_dir
    if not Path(source).exists() and not assets.is_packaged(source):
        raise UserError(
            f"{source} is not a run directory, a model file or a packaged model name "
            f"({_packaged()}); give the folder `train --out` wrote."
        )
    out = args.out or default_out_dir(source)
    for path in write_figures(source, out, seed=args.seed, device=args.device, progress=not args.no_progress):
        print(path)
    return 0
