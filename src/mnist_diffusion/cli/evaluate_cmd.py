"""`mnist-diffusion evaluate PATH`: FID, KID, precision/recall, class balance, label accuracy and
memorisation of samples, printed beside real-data and noise baselines at the same sample count."""

from __future__ import annotations

import argparse
import pathlib
import time
import zipfile

import numpy as np

from mnist_diffusion.errors import UserError

DEFAULT_N = 10_000


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score samples (.npz) or a model (run dir / checkpoint) against real data",
        description="Score samples with the shipped evaluator network. PATH is a .npz with 'images' (uint8, "
                    "N x 28 x 28) and optional 'labels' (int, N), or a run directory / checkpoint, from which "
                    "--n samples are drawn first. Every figure is printed beside two baselines at the same N: "
                    "N real training images and N images of uniform noise.")
    p.add_argument("path", type=pathlib.Path, help=".npz of samples, or a run directory / checkpoint")
    p.add_argument("--n", type=int, default=None,
                   help=f"number of samples (default: all in a .npz; {DEFAULT_N} drawn from a model)")
    g = p.add_argument_group("sampling (PATH is a model)")
    g.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    g.add_argument("--labels", default=None,
                   help="classes to draw, cycling: 0-9 | 7 | 3,5,8; or 'data': the labels of the training images "
                        "the baseline scores, so samples share the data's class mix")
    g.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, baselines and KID subsets (default 0)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    p.add_argument("--data-dir", default=None, help="directory with the dataset's IDX files")
    p.add_argument("--metrics", default=None,
                   help="comma-separated subset of fid,kid,precision_recall,classes,label_accuracy,memorisation "
                        "(default: all that apply)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subset pairs (default 100)")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (default 1000)")
    p.add_argument("--no-baselines", action="store_true", help="skip the train-image and noise baselines")
    p.add_argument("--evaluator", default=None, help="evaluator weights file (default: the shipped one)")
    p.add_argument("--json", type=pathlib.Path, default=None, help="also write the report as JSON here")
    p.set_defaults(func=run)


def load_samples_npz(path: pathlib.Path, n: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """images uint8 (N, 28, 28) and labels int64 (N,) | None from a samples .npz (no pickles)."""
    from mnist_diffusion.evaluation.report import check_samples

    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise UserError(f"{path} has no 'images' array (found: {', '.join(z.files) or 'nothing'}); "
                                "save samples as np.savez(path, images=uint8 (N, 28, 28), labels=int (N,)).")
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read samples file {path} ({e}); it must be a .npz written by numpy "
                        "without object arrays.") from None
    images, labels = check_samples(images, labels, source=str(path))
    if n is not None:
        if n > len(images):
            raise UserError(f"{path} holds {len(images)} images but --n {n} was asked; pass --n {len(images)} or fewer.")
        images, labels = images[:n], None if labels is None else labels[:n]
    return images, labels


def run(args: argparse.Namespace) -> int:
    from mnist_diffusion.evaluation.report import evaluate_images, format_report, write_json

    for name in ("n", "kid_subsets", "kid_subset_size", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {value}.")
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    started = time.perf_counter()
    path = args.path
    if path.suffix == ".npz":
        if not path.is_file():
            raise UserError(f"samples file {path} does not exist.")
        sampling = [("--sampler", args.sampler), ("--steps", args.steps), ("--guidance", args.guidance),
                     ("--labels", args.labels)]
        given = [flag for flag, value in sampling if value is not None]
        if given:
            raise UserError(f"{given[0]} applies only when PATH is a model, but {path} is a .npz of samples.")
        images, labels = load_samples_npz(path, args.n)
        source = str(path)
    else:
        from mnist_diffusion.generate import generate_from_path

        n = args.n or DEFAULT_N
        wanted = args.labels
        if wanted == "data":
            from mnist_diffusion.evaluation.report import baseline_labels

            wanted = baseline_labels(n, args.dataset, args.seed, args.data_dir).tolist()
        print(f"drawing {n} samples from {path} ...", flush=True)
        images, labels = generate_from_path(path, n, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                                            labels=wanted, seed=args.seed, batch_size=args.batch_size)
        source = f"{path} ({n} samples, seed {args.seed})"
    report = evaluate_images(images, labels, dataset=args.dataset, kid_subsets=args.kid_subsets,
                             kid_subset_size=args.kid_subset_size, with_baselines=not args.no_baselines,
                             metrics=metrics, evaluator_path=args.evaluator, data_dir=args.data_dir,
                             seed=args.seed, source=source)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0
