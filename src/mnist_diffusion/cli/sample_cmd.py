"""`mnist-diffusion sample`: digits from a run directory, a checkpoint file, or the packaged model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mnist_diffusion.checkpoint import atomic_write
from mnist_diffusion.generate import DEFAULT_MODEL, SHIPPED, generate, load_model
from mnist_diffusion.images import grid, save_gif, save_grid


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate digits from a run, a checkpoint or the packaged model",
        description="Generate digits. PATH is a run directory or a .safetensors checkpoint; without it the "
        f"packaged {DEFAULT_MODEL!r} model is used. Settings left out come from the model's own config.",
    )
    p.add_argument("path", nargs="?", help="run directory or checkpoint (default: the packaged model)")
    p.add_argument("--model", help=f"packaged model name ({', '.join(SHIPPED)}) or a path; same as PATH")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--sampler", help="ddpm | ddim | dpmpp_2m | heun (seed models: seed)")
    p.add_argument("--steps", type=int, help="number of sampler steps")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--labels", help="digits to draw, cycling: 0-9 | 7 | 3,5,8 (conditional models)")
    p.add_argument("--spacing", choices=["leading", "linspace", "trailing", "karras"], help="timestep spacing")
    p.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic; default from the model's config)")
    p.add_argument("--seed", type=int, default=0, help="image i starts from noise seeded with SEED + i")
    p.add_argument("--batch-size", type=int, help="images per batch")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG to write (default samples.png)")
    p.add_argument("--npz", type=Path, help="also write images (uint8 N,28,28) [and labels] to this .npz")
    p.add_argument("--gif", type=Path, help="also write the denoising trajectory of the first 16 images as a GIF")
    p.add_argument("--nrow", type=int, help="images per grid row")
    p.set_defaults(func=run)


def write_npz(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}
    atomic_write(Path(path), lambda tmp: np.savez_compressed(open(tmp, "wb"), **arrays))


def trajectory_gif(model, path: Path, args) -> None:
    """Record the model's running estimate of the clean image per step for 16 images."""
    from mnist_diffusion.data import to_uint8

    frames = []
    value_range = model.cfg.data.value_range

    def callback(*cb_args):
        x_now = cb_args[-1] if model.cfg.diffusion.kind != "seed" else cb_args[1]
        frames.append(grid(to_uint8(x_now.float().cpu(), value_range), nrow=8))

    images, _ = generate(model, min(16, args.n), sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                         labels=args.labels, seed=args.seed, spacing=args.spacing, callback=callback, eta=args.eta)
    frames.append(grid(images, nrow=8))
    save_gif(frames, path)


def run(args: argparse.Namespace) -> int:
    from mnist_diffusion.device import resolve_device

    model = load_model(args.path or args.model, resolve_device(args.device))
    images, labels = generate(model, args.n, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                              labels=args.labels, seed=args.seed, batch_size=args.batch_size, spacing=args.spacing,
                              eta=args.eta, progress=args.n > 1000)
    nrow = args.nrow or (10 if labels is not None and args.n % 10 == 0 and args.labels in (None, "0-9") else None)
    save_grid(images[:400], args.out, nrow=nrow)
    print(f"Wrote {min(len(images), 400)} of {len(images)} samples to {args.out}")
    if args.npz:
        write_npz(args.npz, images, labels)
        print(f"Wrote {args.npz} (images uint8 {images.shape}{', labels' if labels is not None else ''})")
    if args.gif:
        trajectory_gif(model, args.gif, args)
        print(f"Wrote the denoising trajectory to {args.gif}")
    return 0


def write_run_samples(run_dir: Path) -> Path:
    """The grid a finished training run leaves behind: 10 of each digit, or 64 unconditional samples."""
    model = load_model(run_dir)
    n = 100 if model.cfg.model.num_classes else 64
    images, labels = generate(model, n)
    path = save_grid(images, Path(run_dir) / "samples.png", nrow=10 if labels is not None else 8)
    print(f"Samples: {path}")
    return path
