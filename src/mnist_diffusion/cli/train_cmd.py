"""`mnist-diffusion train`: start a run from a recipe or a config file, or resume one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mnist_diffusion.api import train
from mnist_diffusion.config import ConfigError, DataConfig, TrainConfig, choices, load_run_config
from mnist_diffusion.recipes import RECIPES
from mnist_diffusion.training.loop import RunInterrupted


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (or resume a run)",
        description="Train a model from a recipe into a run directory (config.json, metrics.jsonl, "
        "checkpoint.safetensors, model.safetensors, samples.png). Ctrl-C saves and exits; --resume continues exactly.",
    )
    p.add_argument("--recipe", default="seed", choices=list(RECIPES),
                   help=f"starting configuration: {', '.join(RECIPES)} (default: seed, the tutorial)")
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a recipe")
    p.add_argument("--out", type=Path, help="run directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--device", choices=choices(TrainConfig, "device"), help="train.device")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (train.compile)")
    p.add_argument("--limit", type=int, help="use only the first N training images (data.limit)")
    p.add_argument("--dataset", choices=choices(DataConfig, "dataset"), help="data set (data.dataset)")
    p.add_argument("--data-dir", help="folder with the four IDX files, .gz or not (data.data_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set train.lr=2e-4 --set model.channels=[32,64,64]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-samples", action="store_true", help="skip the sample grid at the end")
    p.set_defaults(func=run)


def flag_overrides(args) -> list[str]:
    """The shortcut flags as `--set` overrides, then the --set ones (which win)."""
    pairs = [("train.epochs", args.epochs), ("train.max_steps", args.max_steps), ("train.seed", args.seed),
             ("train.device", args.device), ("data.limit", args.limit),
             ("data.dataset", args.dataset), ("data.data_dir", args.data_dir)]
    out = [f"{k}={json.dumps(v)}" for k, v in pairs if v is not None]
    if args.compile:
        out.append("train.compile=true")
    return out + args.overrides


def run(args: argparse.Namespace) -> int:
    recipe = args.recipe
    if args.config:
        try:
            data = json.loads(args.config.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"Cannot read config file {args.config}: {e}.") from None
        recipe = load_run_config(data, str(args.config))
    try:
        run_dir = train(recipe, args.out, resume=args.resume, overrides=flag_overrides(args),
                        progress=not args.no_progress, samples=not args.no_samples)
    except RunInterrupted as stop:
        print(f"Interrupted at step {stop.step}; saved. Continue with: mnist-diffusion train --resume "
              f"{stop.run_dir}", file=sys.stderr)
        return 130
    print(f"Done: {run_dir}/model.safetensors (sample with: mnist-diffusion sample {run_dir})")
    return 0
