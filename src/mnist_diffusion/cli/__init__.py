"""The `mnist-diffusion` command. Each subcommand lives in its own module with a `register()`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Idle OpenMP threads sleep instead of spinning. On a small machine shared with other work, spinning threads
# steal the cores that the busy ones need (benchmarks/results/sampling_speed.md). Set before torch loads,
# because OpenMP reads it once; a value the user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mnist_diffusion import __version__
from mnist_diffusion.errors import UserError

# (subcommand module, one-line help); each module defines register(subparsers) setting `func`.
SUBCOMMANDS = ["train", "sample", "figures", "evaluate", "evaluator"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-diffusion",
        description="Train diffusion models on MNIST, sample digits, draw figures and evaluate samples.",
    )
    parser.add_argument("--version", action="version", version=f"mnist-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"mnist_diffusion.cli.{name}_cmd")
        except ModuleNotFoundError as e:
            if e.name != f"mnist_diffusion.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mnist-diffusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mnist-diffusion {args.command}: interrupted.", file=sys.stderr)
        return 130
