"""`mnist-diffusion sample`: digits from a packaged model, a run directory or a checkpoint file."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_diffusion import assets
from mnist_diffusion.batches import MAX_SAMPLES
from mnist_diffusion.cli.options import (
    add_compile_option,
    add_precision_option,
    add_sampling_options,
    add_seed_option,
    sampling_settings,
    whole,
)
from mnist_diffusion.files import check_output
from mnist_diffusion.pipeline import load
from mnist_diffusion.trajectory import Trajectory, write_trajectory_gif


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate digits from a packaged model, a run or a checkpoint",
        description="Generate digits. PATH is a packaged model name, a run directory or a .safetensors "
        f"checkpoint; without it the packaged {assets.DEFAULT_MODEL!r} model is used. Settings left out come "
        "from the model's own config.",
    )
    p.add_argument(
        "path",
        nargs="?",
        help=f"packaged name ({', '.join(assets.names('model'))}), run directory "
        "or checkpoint (default: the packaged model)",
    )
    p.add_argument("--model", help="the same as PATH")
    p.add_argument(
        "--n", type=whole(1, MAX_SAMPLES), default=64, help=f"number of images, 1 to {MAX_SAMPLES:,} (default 64)"
    )
    add_sampling_options(p)
    p.add_argument(
        "--guide",
        metavar="MODEL",
        help="autoguidance: a weaker model of the same kind (an earlier or "
        "smaller run) guides in place of the unconditional pass",
    )
    add_seed_option(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    add_precision_option(p)
    add_compile_option(p)
    p.add_argument("--out", type=Path, help="grid .png to write (default: samples.png, unless --npz or --gif is given)")
    p.add_argument("--npz", type=Path, help="also write images (uint8 N,28,28) [and labels] to this .npz")
    p.add_argument("--gif", type=Path, help="also write the denoising of the first images as an animated GIF")
    p.add_argument("--nrow", type=whole(1, MAX_SAMPLES), help="images per grid row")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.npz is None and args.gif is None:
        args.out = Path("samples.png")
    outputs = (
        (args.out, "grid", (".png", ".npz")),
        (args.npz, "samples file", (".npz",)),
        (args.gif, "GIF", (".gif",)),
    )
    for path, what, suffixes in outputs:  # before the model is loaded or a digit drawn
        if path is not None:
            check_output(path, what, suffixes)
    pipe = load(args.path or args.model, args.device, args.precision or "auto", compile=args.compile)
    if args.guide:
        pipe.autoguide(load(args.guide, args.device, args.precision or "auto", compile=args.compile))
    trajectory = Trajectory(pipe.value_range) if args.gif else None
    out = pipe.sample(
        args.n, seed=args.seed, progress=not args.no_progress, callback=trajectory, **sampling_settings(args)
    )
    if args.out is not None:
        out[:400].save(args.out, nrow=args.nrow)
        print(f"Wrote {min(len(out), 400)} of {len(out)} samples to {args.out}")
    if args.npz:
        out.save(args.npz)
        print(f"Wrote {args.npz} (images uint8 {out.images.shape}{', labels' if out.labels is not None else ''})")
    if trajectory is not None:
        write_trajectory_gif(trajectory, out, args.gif, pipe)
        print(f"Wrote the denoising trajectory to {args.gif}")
    return 0
