"""The `mnist-diffusion` command: a thin layer over the Python API. Each subcommand lives in its own module
with a `register(subparsers)` that sets the function to run."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from mnist_diffusion import __version__
from mnist_diffusion.cli import (
    classifier_cmd,
    evaluate_cmd,
    export_cmd,
    figures_cmd,
    inpaint_cmd,
    sample_cmd,
    serve_cmd,
    train_cmd,
)
from mnist_diffusion.errors import UserError
from mnist_diffusion.training import stops

SUBCOMMANDS = (train_cmd, sample_cmd, inpaint_cmd, serve_cmd, export_cmd, figures_cmd, evaluate_cmd, classifier_cmd)


class UsageError(UserError):
    """A command line argparse cannot parse; `prog` names the (sub)command."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one sentence (the subcommands' parsers are of this class too)."""

    def error(self, message: str):
        raise UsageError(self.prog, f"{message}; see '{self.prog} --help'.")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mnist-diffusion",
        description="Train diffusion models on MNIST, sample digits, draw figures and evaluate samples.",
    )
    parser.add_argument("--version", action="version", version=f"mnist-diffusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"{e.prog}: error: {e}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stops.raise_terminated) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mnist-diffusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        name = "SIGTERM" if isinstance(e, stops.Terminated) else "SIGINT"
        print(f"mnist-diffusion {args.command}: stopped by {name}.", file=sys.stderr)
        return stops.exit_code(signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)
    except OSError as e:  # outputs are checked before the work; this is a disk that filled up or went away
        where = f" {e.filename}" if e.filename else ""
        print(
            f"mnist-diffusion {args.command}: error: cannot write or read{where}: {e.strerror or e}.", file=sys.stderr
        )
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
