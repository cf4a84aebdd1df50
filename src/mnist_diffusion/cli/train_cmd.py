"""`mnist-diffusion train`: start a run from a recipe or a config file, or resume one."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from mnist_diffusion.api import train
from mnist_diffusion.config import ConfigError, DataConfig, TrainConfig, choices, load_run_config
from mnist_diffusion.errors import UserError
from mnist_diffusion.files import JSON_MAX_CHARS, parse_json
from mnist_diffusion.recipes import RECIPES
from mnist_diffusion.training.distributed import is_main_process
from mnist_diffusion.training.loop import RunInterrupted
from mnist_diffusion.training.stops import exit_code


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (or resume a run)",
        description="Train a model from a recipe into a run directory (config.json, metrics.jsonl, "
        "checkpoint.safetensors, model.safetensors, samples.png). Ctrl-C or SIGTERM finishes the step, saves and exits (130 / 143); --resume continues exactly.",
    )
    p.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help=f"starting configuration: {', '.join(RECIPES)} (default: seed, the tutorial)",
    )
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a recipe")
    p.add_argument("--out", type=Path, help="run directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--device", choices=choices(TrainConfig, "device"), help="train.device")
    p.add_argument(
        "--precision",
        choices=choices(TrainConfig, "precision"),
        help="train.precision: auto (bf16 autocast on CUDA and on CPUs with AMX / AVX-512-BF16, else fp32) "
        "| fp32 | bf16",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the network (train.compile)")
    p.add_argument("--limit", type=int, help="use only the first N training images (data.limit)")
    p.add_argument("--dataset", choices=choices(DataConfig, "dataset"), help="data set (data.dataset)")
    p.add_argument("--data-dir", help="folder with the four IDX files, .gz or not (data.data_dir)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set train.lr=2e-4 --set model.channels=[32,64,64]",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-samples", action="store_true", help="skip the sample grid at the end")
    p.set_defaults(func=run)


def flag_overrides(args) -> list[str]:
    """The shortcut flags as `--set` overrides, then the --set ones (which win)."""
    pairs = [
        ("train.epochs", args.epochs),
        ("train.max_steps", args.max_steps),
        ("train.seed", args.seed),
        ("train.device", args.device),
        ("train.precision", args.precision),
        ("data.limit", args.limit),
        ("data.dataset", args.dataset),
        ("data.data_dir", args.data_dir),
    ]
    out = [f"{k}={json.dumps(v)}" for k, v in pairs if v is not None]
    if args.compile:
        out.append("train.compile=true")
    return out + args.overrides


def run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        given = [flag for flag, v in (("--recipe", args.recipe), ("--config", args.config), ("--out", args.out)) if v]
        if given:
            raise UserError(
                f"--resume continues {args.resume} with the config saved there, so {' and '.join(given)} "
                f"cannot be given with it; drop {'them' if len(given) > 1 else 'it'}, or start a new run."
            )
    if args.recipe and args.config:
        raise UserError("--recipe and --config both say what to train; give one of them.")
    recipe = args.recipe or "seed"
    if args.config:
        try:
            if args.config.stat().st_size > JSON_MAX_CHARS:  # refused before it is read into memory
                raise ConfigError(f"Config file {args.config} is larger than any run config; give a config.json.")
            data = parse_json(args.config.read_bytes(), f"Config file {args.config}")
        except OSError as e:
            raise ConfigError(f"Cannot read config file {args.config}: {e.strerror or e}.") from None
        recipe = load_run_config(data, str(args.config))
    try:
        run_dir = train(
            recipe,
            args.out,
            resume=args.resume,
            overrides=flag_overrides(args),
            progress=not args.no_progress,
            samples=not args.no_samples,
        )
    except RunInterrupted as stop:
        name = signal.Signals(stop.signum).name
        if is_main_process():  # under torchrun every rank stops; one says so
            print(
                f"Stopped by {name} after step {stop.step}, saved in {stop.run_dir}; continue with: "
                f"mnist-diffusion train --resume {stop.run_dir}",
                file=sys.stderr,
            )
        return exit_code(stop.signum)
    if is_main_process():  # under torchrun every rank gets here; one says so
        print(f"Done: {run_dir}/model.safetensors (sample with: mnist-diffusion sample {run_dir})")
    return 0
