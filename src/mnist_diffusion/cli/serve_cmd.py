"""`mnist-diffusion serve`: the local page to watch, steer and complete digits (the `serve` extra)."""

from __future__ import annotations

import argparse
import sys

from mnist_diffusion import assets
from mnist_diffusion.cli.options import add_precision_option
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import load


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="a local page: watch denoising step by step, draw part of a digit to complete, grids",
        description="Serve the interactive page on http://HOST:PORT (local only by default). MODEL (several "
        "allowed) are packaged names or run directories; without any, every packaged model is offered. Needs "
        "the serve extra: pip install 'mnist-diffusion[serve]'.",
    )
    p.add_argument("models", nargs="*", help=f"packaged names ({', '.join(assets.names('model'))}) or run directories")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; another address opens the page, "
        "without a password, to every machine that can reach it)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto")
    add_precision_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from mnist_diffusion.serve import is_loopback, serve
    except ModuleNotFoundError as e:
        raise UserError(
            f"serve needs {e.name}, which is not installed; pip install 'mnist-diffusion[serve]'."
        ) from None
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}.")
    for name in args.models:  # refuse a bad model now, not on the page's first request
        load(name, args.device, args.precision or "auto")
    if not is_loopback(args.host):
        print(
            f"warning: --host {args.host} lets every machine that can reach this one on port {args.port} use the "
            "page and keep this machine's processor busy drawing digits; there is no password. Leave --host out "
            "to keep it to this machine.",
            file=sys.stderr,
            flush=True,
        )
    print(f"Serving on http://{args.host}:{args.port}  (Ctrl-C stops)", flush=True)
    serve(args.models or None, args.host, args.port, args.device, args.precision or "auto")
    return 0
