"""`mnist-diffusion train`: start a run from a recipe, or resume one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import ConfigError, apply_overrides, load_run_config, with_changes
from mnist_diffusion.errors import UserError
from mnist_diffusion.recipes import RECIPES, get_recipe


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a recipe (or resume a run)",
        description="Train a model from a recipe into a run directory (config.json, metrics.jsonl, "
        "checkpoint.safetensors, model.safetensors, samples.png). Ctrl-C saves and exits; --resume continues exactly.",
    )
    p.add_argument("--recipe", default="seed", help=f"starting configuration: {', '.join(RECIPES)} (default: seed)")
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a recipe")
    p.add_argument("--out", type=Path, help="run directory (default: runs/RECIPE-TIMESTAMP)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    p.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (train.max_steps)")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--device", help="auto | cpu | cuda | mps (train.device)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (train.compile)")
    p.add_argument("--limit", type=int, help="use only the first N training images (data.limit)")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist"], help="data set (data.dataset)")
    p.add_argument("--data-dir", help="folder with the four IDX files, .gz or not (data.data_dir)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set train.lr=2e-4 --set model.channels=[32,64,64]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-samples", action="store_true", help="skip the sample grid at the end")
    p.set_defaults(func=run)


def _flag_overrides(args) -> list[str]:
    pairs = [("train.epochs", args.epochs), ("train.max_steps", args.max_steps), ("train.seed", args.seed),
             ("train.device", args.device), ("data.limit", args.limit),
             ("data.dataset", args.dataset), ("data.data_dir", args.data_dir)]
    out = [f"{k}={json.dumps(v)}" for k, v in pairs if v is not None]
    if args.compile:
        out.append("train.compile=true")
    return out + args.overrides


def resolve_config(args):
    if args.resume:
        run_dir = args.resume
        state = run_dir / ckpt.STATE_FILE
        if not state.is_file():
            raise UserError(f"Cannot resume {run_dir}: it holds no {ckpt.STATE_FILE}; start a new run instead.")
        cfg = ckpt.load_checkpoint(state, expect_kind="training-state").config
        changed = apply_overrides(cfg, _flag_overrides(args))
        # Only the length of a run may change on resume; anything else would make it a different run.
        if with_changes(changed, train={"epochs": cfg.train.epochs, "max_steps": cfg.train.max_steps}) != cfg:
            raise UserError("On --resume only --epochs and --max-steps may change; start a new run for other settings.")
        return changed, run_dir
    if args.config:
        try:
            data = json.loads(args.config.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"Cannot read config file {args.config}: {e}.") from None
        cfg = load_run_config(data, str(args.config))
    else:
        cfg = get_recipe(args.recipe)
    cfg = apply_overrides(cfg, _flag_overrides(args))
    run_dir = args.out or Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / ckpt.STATE_FILE).exists() or (run_dir / ckpt.MODEL_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; use --resume {run_dir} to continue it, or another --out.")
    return cfg, run_dir


def run(args: argparse.Namespace) -> int:
    from mnist_diffusion.training.distributed import shutdown
    from mnist_diffusion.training.loop import make_trainer

    cfg, run_dir = resolve_config(args)
    trainer = make_trainer(cfg, run_dir, resume=args.resume is not None)
    main = trainer.dist.is_main
    if main:
        verb = "Resuming" if args.resume else "Training"
        print(f"{verb} {cfg.recipe} in {run_dir} on {trainer.device} "
              f"(step {trainer.progress.step} of {trainer.total_steps()})", file=sys.stderr)
    try:
        trainer.fit(progress_bar=not args.no_progress)
    except KeyboardInterrupt:
        if main:
            print(f"Interrupted at step {trainer.progress.step}; saved. Continue with: "
                  f"mnist-diffusion train --resume {run_dir}", file=sys.stderr)
        shutdown()
        return 130
    if main and not args.no_samples:
        from mnist_diffusion.cli.sample_cmd import write_run_samples

        write_run_samples(run_dir)
    shutdown()
    if main:
        print(f"Done: {run_dir}/model.safetensors (sample with: mnist-diffusion sample {run_dir})")
    return 0
