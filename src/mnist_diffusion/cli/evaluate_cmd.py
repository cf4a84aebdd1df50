"""`mnist-diffusion evaluate PATH`: FID, KID, precision/recall, class balance, label accuracy and
memorisation of samples, printed beside real-data and noise baselines at the same sample count."""

from __future__ import annotations

import argparse
import pathlib

from mnist_diffusion.api import evaluate
from mnist_diffusion.batches import MAX_SAMPLES
from mnist_diffusion.cli.options import (
    add_compile_option,
    add_precision_option,
    add_sampling_options,
    add_seed_option,
    sampling_settings,
    whole,
)
from mnist_diffusion.config import DataConfig, choices
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation.report import (
    ALL_METRICS,
    MAX_KID_SUBSET_SIZE,
    MAX_KID_SUBSETS,
    format_report,
    write_json,
)
from mnist_diffusion.files import check_writable
from mnist_diffusion.pipeline import load

DEFAULT_N = 10_000


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score samples (.npz) or a model (packaged name, run dir, checkpoint) against real data",
        description="Score samples with the packaged evaluator network. PATH is a .npz with 'images' (uint8, "
        "N x 28 x 28) and optional 'labels' (int, N), or a model (packaged name, run directory, "
        "checkpoint), from which --n samples are drawn first. Every figure is printed beside two "
        "baselines at the same N: N real training images and N images of uniform noise.",
    )
    p.add_argument("path", help=".npz of samples, or a packaged model name, run directory or checkpoint")
    p.add_argument(
        "--n",
        type=whole(1, MAX_SAMPLES),
        default=None,
        help=f"number of samples, 1 to {MAX_SAMPLES:,} (default: all in a .npz; {DEFAULT_N} drawn from a model)",
    )
    add_sampling_options(p)
    add_seed_option(p, "seed for sampling, baselines and KID subsets")
    p.add_argument("--device", default="cpu", help="device to sample on: cpu | cuda | mps | auto")
    add_precision_option(p)
    add_compile_option(p)
    p.add_argument(
        "--dataset",
        choices=choices(DataConfig, "dataset"),
        default=None,
        help="data set to score against (default: the model's; mnist for a .npz)",
    )
    p.add_argument("--data-dir", default=None, help="directory with the dataset's IDX files")
    p.add_argument(
        "--metrics", default=None, help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all that apply)"
    )
    p.add_argument(
        "--kid-subsets",
        type=whole(1, MAX_KID_SUBSETS),
        default=100,
        help=f"KID subset pairs, 1 to {MAX_KID_SUBSETS:,} (default 100)",
    )
    p.add_argument(
        "--kid-subset-size",
        type=whole(2, MAX_KID_SUBSET_SIZE),
        default=1000,
        help=f"KID subset size, 2 to {MAX_KID_SUBSET_SIZE:,} (default 1000)",
    )
    p.add_argument("--no-baselines", action="store_true", help="skip the train-image and noise baselines")
    p.add_argument("--evaluator", default=None, help="evaluator weights file (default: the packaged one)")
    p.add_argument("--json", type=pathlib.Path, default=None, help="also write the report as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while sampling")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.json is not None:
        check_writable(args.json, "JSON report")
    metrics = None if args.metrics is None else [m.strip() for m in args.metrics.split(",") if m.strip()]
    common = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "seed": args.seed,
        "metrics": metrics,
        "kid_subsets": args.kid_subsets,
        "kid_subset_size": args.kid_subset_size,
        "baselines": not args.no_baselines,
        "evaluator": args.evaluator,
    }
    if pathlib.Path(args.path).suffix == ".npz":
        if not pathlib.Path(args.path).is_file():
            raise UserError(f"samples file {args.path} does not exist.")
        given = {k: v for k, v in sampling_settings(args).items() if v is not None and k != "guidance_interval"}
        given.update({"precision": args.precision} if args.precision is not None else {})
        given.update({"compile": True} if args.compile else {})
        if given or args.guidance_interval is not None:
            flag = next(iter(given), "guidance_interval").replace("_", "-")
            raise UserError(f"--{flag} applies only when PATH is a model, but {args.path} is a .npz of samples.")
        report = evaluate(args.path, args.n, **common)
    else:
        pipe = load(args.path, args.device, args.precision or "auto", compile=args.compile)
        n = DEFAULT_N if args.n is None else args.n
        print(f"drawing {n} samples from {args.path} ...", flush=True)
        settings = sampling_settings(args)
        report = evaluate(pipe, n, labels=settings.pop("labels"), progress=not args.no_progress, **common, **settings)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0
