"""`mnist-diffusion inpaint`: complete digits of which only some pixels are known."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import numpy as np

from mnist_diffusion import assets
from mnist_diffusion.batches import MAX_RESAMPLE
from mnist_diffusion.cli.options import add_sampling_options, add_seed_option, whole
from mnist_diffusion.errors import UserError
from mnist_diffusion.files import check_output
from mnist_diffusion.images import inpainting_grid, save_image
from mnist_diffusion.pipeline import INPAINT_METHODS, half_mask, load

HALVES = ("top", "bottom", "left", "right")


def register(sub) -> None:
    p = sub.add_parser(
        "inpaint",
        help="complete partly known digits (inpainting)",
        description="Complete digits: the pixels the mask marks as known are kept exactly, the rest are filled in "
        "by the model. --input is a .npz with 'images' (uint8, N x 28 x 28), 'mask' (N x 28 x 28, nonzero = "
        "known; or use --keep) and optionally 'labels' (int, N: the digit to complete towards). Without --steps a "
        "completion takes the model's sampling steps, but at least 20 (a distilled student its own).",
    )
    p.add_argument(
        "path",
        nargs="?",
        help=f"packaged name ({', '.join(assets.names('model'))}), run directory or "
        "checkpoint (default: the packaged model)",
    )
    p.add_argument("--input", type=Path, required=True, help="the .npz of images, mask [and labels]")
    p.add_argument("--keep", choices=HALVES, help="keep this half of each digit instead of the file's mask")
    p.add_argument("--npz", type=Path, required=True, help="write the completions (images [and labels]) here")
    p.add_argument("--out", type=Path, help="also write a grid PNG: inputs, masks and completions")
    p.add_argument(
        "--method",
        choices=INPAINT_METHODS,
        default="project",
        help="project: paste the known pixels into each step's x0 estimate (default); replace: put the "
        "known region of x_t back on the forward process",
    )
    p.add_argument(
        "--resample",
        type=whole(1, MAX_RESAMPLE),
        default=1,
        help=f"RePaint: take every step this many times, 1 to {MAX_RESAMPLE} (default 1)",
    )
    add_sampling_options(p)
    add_seed_option(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def read_input(path: Path, keep: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """images, mask and labels (or None) from an inpainting .npz (no pickles)."""
    if not path.is_file():
        raise UserError(f"--input {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as z:
            found = set(z.files)
            if "images" not in found:
                raise UserError(f"{path} has no 'images' array (found: {', '.join(sorted(found)) or 'nothing'}).")
            if "mask" not in found and keep is None:
                raise UserError(
                    f"{path} has no 'mask' array; add one (N x 28 x 28, nonzero = known) or pass --keep "
                    f"{'|'.join(HALVES)}."
                )
            images = z["images"]
            mask = z["mask"] if keep is None else half_mask(keep, len(images))
            labels = z["labels"] if "labels" in found else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(
            f"cannot read {path} ({e}); it must be a .npz written by numpy without object arrays."
        ) from None
    return images, mask, labels


def run(args: argparse.Namespace) -> int:
    for path, what, suffixes in ((args.npz, "completions file", (".npz",)), (args.out, "grid", (".png",))):
        if path is not None:  # before the model is loaded or a digit completed
            check_output(path, what, suffixes)
    images, mask, file_labels = read_input(args.input, args.keep)
    pipe = load(args.path, args.device)
    labels = args.labels if args.labels is not None else file_labels
    out = pipe.inpaint(
        images,
        mask,
        labels=labels,
        guidance=args.guidance,
        steps=args.steps,
        sampler=args.sampler,
        resample=args.resample,
        method=args.method,
        seed=args.seed,
        progress=not args.no_progress,
        batch_size=args.batch_size,
    )
    out.save(args.npz)
    print(f"Wrote {args.npz} ({len(out)} completions, images uint8 {out.images.shape})")
    if args.out:
        save_image(inpainting_grid(images, np.asarray(mask) != 0, out.images), args.out)
        print(f"Wrote {args.out} (rows: input, mask, completion)")
    return 0
