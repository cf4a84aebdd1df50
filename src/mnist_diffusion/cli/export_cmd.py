"""`mnist-diffusion export` (a model's network as ONNX) and `mnist-diffusion export-web` (the static edition of the
page: the models run in the browser, no Python). Both need the `export` extra; export-web also npm, once."""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_diffusion import assets
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import load


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="a model's network as an ONNX file, checked against PyTorch",
        description="Write MODEL's fp32 network as ONNX (dynamic batch; inputs x, t and the class label, "
        "guidance or interval inputs it takes) and check it with onnxruntime against PyTorch on random inputs. "
        "Needs the export extra: pip install 'mnist-diffusion[export]'.",
    )
    p.add_argument("model", help=f"a packaged name ({', '.join(assets.names('model'))}) or a run directory")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="the file format (onnx)")
    p.add_argument("--out", required=True, help="the file to write (.onnx)")
    p.set_defaults(func=run_export)

    w = sub.add_parser(
        "export-web",
        help="a static page that runs the models in the browser (no server, no Python)",
        description="Build the static edition of the page into a new or empty folder: the served page's front end, "
        "the models' networks as ONNX and ONNX Runtime Web, for any static server (e.g. GitHub Pages). "
        "ONNX Runtime Web is fetched once with npm into --npm-cache. Needs the export extra.",
    )
    w.add_argument("models", nargs="+", help="packaged names or run directories; the page opens at the first")
    w.add_argument("--out", required=True, help="the folder to write (new, or empty)")
    w.add_argument("--npm-cache", help="where onnxruntime-web is kept between builds (default: the package's cache)")
    w.set_defaults(func=run_web)


def _pipeline(name: str):
    from mnist_diffusion.export.onnx import refusal

    pipe = load(name, "cpu", "fp32")
    if not hasattr(pipe, "process"):  # an autoencoder's preview
        raise UserError(f"{name} cannot be exported: {refusal(pipe.config, 'autoencoder')}")
    return pipe


def run_export(args: argparse.Namespace) -> int:
    from mnist_diffusion.export.onnx import export_onnx

    if not args.out.endswith(".onnx"):
        raise UserError(f"--out must name an .onnx file, got {args.out!r}.")
    result = export_onnx(_pipeline(args.model), Path(args.out))
    print(result)
    return 0


def run_web(args: argparse.Namespace) -> int:
    from mnist_diffusion.export.web import build_site, check_out

    check_out(Path(args.out))  # before any model is loaded
    pipes = [(name, _pipeline(name)) for name in dict.fromkeys(args.models)]
    site = build_site(pipes, args.out, args.npm_cache)
    for check in site["checks"]:
        print(check)
    print(f"Wrote {site['out']} ({site['bytes'] / 1e6:.1f} MB); serve the folder with any static server, e.g.")
    print(f"  python -m http.server --directory {site['out']} 8000   # then open http://127.0.0.1:8000")
    return 0
