"""`mnist-diffusion classifier train|info`: train the evaluator (the classifier whose features every sample metric
uses), or show the packaged ones. `evaluator` is the same command under its earlier name, which the packaged
evaluators' metadata records as their training command."""

from __future__ import annotations

import argparse
import pathlib

import torch

from mnist_diffusion import assets
from mnist_diffusion.cli.options import add_seed_option
from mnist_diffusion.config import DataConfig, choices
from mnist_diffusion.data import load_split
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation.classifier_training import EvaluatorTrainConfig, train_evaluator
from mnist_diffusion.evaluation.evaluator_file import load_evaluator, save_evaluator
from mnist_diffusion.files import check_writable


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "classifier",
        aliases=["evaluator"],
        help="train or inspect the evaluator network that FID/KID/precision/recall use",
        description="Train the evaluator classifier (its penultimate layer is the feature space of all "
        "sample metrics), or list the packaged evaluators and verify their sha256.",
    )
    sub = parser.add_subparsers(dest="classifier_command", metavar="ACTION")

    train = sub.add_parser(
        "train",
        help="train an evaluator (seeded, reproducible) and write safetensors",
        description="Train the evaluator on the 60,000 training images, report test "
        "accuracy and write the weights with their config and command.",
    )
    train.add_argument("--dataset", choices=choices(DataConfig, "dataset"), default="mnist")
    train.add_argument("--epochs", type=int, default=4, help="passes over the training set (default 4)")
    add_seed_option(train, "seed for weights, data order and shifts")
    train.add_argument(
        "--out", type=pathlib.Path, default=None, help="weights file to write (default ./evaluator-DATASET.safetensors)"
    )
    train.add_argument("--data-dir", default=None, help="directory with the four IDX files of the dataset")
    train.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    train.add_argument("--limit", type=int, default=None, help="train on the first N images only (smoke tests)")
    train.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="exit non-zero if test accuracy ends below this fraction (e.g. 0.993)",
    )
    train.set_defaults(func=_train)

    info = sub.add_parser("info", help="list shipped evaluators and check their sha256")
    info.set_defaults(func=_info)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"--{name} must be a positive integer, got {value}.")


def _train(args: argparse.Namespace) -> int:
    for name in ("epochs", "threads", "limit"):
        _positive(name, getattr(args, name))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = args.out or pathlib.Path(f"evaluator-{args.dataset}.safetensors")
    check_writable(out, "evaluator file")
    cfg = EvaluatorTrainConfig(dataset=args.dataset, epochs=args.epochs, seed=args.seed, limit=args.limit)
    train = load_split(args.dataset, "train", data_dir=args.data_dir)
    test = load_split(args.dataset, "test", data_dir=args.data_dir)
    result = train_evaluator(cfg, train, test)
    # The command that reproduces these weights (the output path and data location do not change them).
    command = f"mnist-diffusion classifier train --dataset {args.dataset} --epochs {args.epochs} --seed {args.seed}"
    if args.limit is not None:
        command += f" --limit {args.limit}"
    sha = save_evaluator(
        result.net,
        out,
        {
            "dataset": args.dataset,
            "train_command": command,
            "seed": args.seed,
            "epochs": args.epochs,
            "train_images": len(train[0]) if args.limit is None else min(args.limit, len(train[0])),
            "test_accuracy": f"{result.test_accuracy:.4f}",
            "torch_version": torch.__version__,
        },
    )
    print(
        f"wrote {out} ({result.parameters:,} parameters, test accuracy {result.test_accuracy:.2%}, "
        f"{result.seconds:.0f} s)"
    )
    print(f"sha256 {sha}")
    if args.min_accuracy is not None and result.test_accuracy < args.min_accuracy:
        print(f"test accuracy {result.test_accuracy:.4f} is below --min-accuracy {args.min_accuracy}")
        return 1
    return 0


def _info(args: argparse.Namespace) -> int:
    status = 0
    for name in assets.names("evaluator"):
        dataset = name.removeprefix("evaluator-")
        try:
            ev = load_evaluator(dataset)
        except UserError as e:
            print(f"{dataset}: {assets.PACKAGED[name].filename}: FAILED: {e}")
            status = 1
            continue
        md = ev.metadata
        print(
            f"{dataset}: {ev.path} sha256 {ev.sha256} (verified); test accuracy {md.get('test_accuracy')}; "
            f"trained with `{md.get('train_command')}`"
        )
    return status
