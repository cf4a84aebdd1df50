"""Training: images/s of each recipe through the package's own step, by numerics, layout, compile and threads."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks import quality_curve
from benchmarks.core import BenchError, Param, alternate, case, median

RECIPES = ("seed", "ddpm", "ddpm-cond", "ldm-ae", "ldm")


def overrides(variant: str) -> list[str]:
    """Config overrides of a variant written as '+'-joined tokens: fp32 | bf16 | channels_last | nchw | compile |
    threads=N | batch=N (e.g. 'bf16+channels_last+compile'); the recipe's own settings otherwise."""
    table = {
        "fp32": "train.precision=fp32",
        "bf16": "train.precision=bf16",
        "compile": "train.compile=true",
        "channels_last": "train.channels_last=true",
        "nchw": "train.channels_last=false",
    }
    out = []
    for token in filter(None, variant.split("+")):
        key, _, value = token.partition("=")
        if token in table:
            out.append(table[token])
        elif key in ("threads", "batch") and value.isdigit():
            out.append(f"train.{'threads' if key == 'threads' else 'batch_size'}={value}")
        else:
            raise BenchError(
                f"variant {variant!r}: unknown token {token!r}; use fp32, bf16, channels_last, nchw, "
                "compile, threads=N or batch=N joined by '+'."
            )
    return out


def make(recipe: str, variant: str, work: Path, device: str = "cpu", data_limit: int = 4096):
    """(trainer, endless batches) of `recipe` in `variant`, from the recipe's seed: the same data and noise in
    every variant. A latent recipe trains inside the packaged ldm-ae."""
    from dataclasses import replace

    from mnist_diffusion.config import apply_overrides, with_changes
    from mnist_diffusion.recipes import get_recipe
    from mnist_diffusion.training.data_order import epoch_batches
    from mnist_diffusion.training.loop import make_trainer

    cfg = with_changes(get_recipe(recipe), train={"device": device}, data={"limit": data_limit})
    if cfg.latent is not None:
        cfg = replace(cfg, latent=replace(cfg.latent, autoencoder="ldm-ae"))
    cfg = apply_overrides(cfg, overrides(variant))
    trainer = make_trainer(cfg, work / f"{recipe}-{variant or 'as-is'}".replace("=", ""))
    trainer.net.train()

    def batches():
        epoch = 0
        while True:
            for _, idx in epoch_batches(len(trainer.images), cfg.train.batch_size, epoch, cfg.train.seed):
                yield trainer.batch(idx)
            epoch += 1

    return trainer, batches()


def flops_per_image(trainer, batches) -> float:
    """Matmul and convolution FLOPs (torch's FlopCounterMode: no elementwise work, so a lower bound) of one
    forward and backward per training image."""
    from torch.utils.flop_counter import FlopCounterMode

    x, labels = next(batches)
    with FlopCounterMode(display=False) as counter:
        trainer.objective(trainer.net, x, labels, trainer.generator)["loss"].backward()
    trainer.opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def compare(
    recipe: str,
    variants: tuple[str, ...],
    steps: int,
    rounds: int,
    warmup: int,
    device: str = "cpu",
    data_limit: int = 4096,
):
    """Each variant's training images/s (variants in turn, round after round), warm-up seconds (the compile),
    mean loss of the timed steps (same seed, data and noise: the numerics compared at equal steps), FLOPs."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = {v: make(recipe, v, Path(tmp), device, data_limit) for v in variants}
        losses: dict[str, list[float]] = {v: [] for v in variants}

        def steps_of(v):
            trainer, batches = runs[v]
            for _ in range(steps):
                losses[v].append(trainer.train_step(*next(batches))["loss"].item())

        seconds = alternate({v: (lambda v=v: steps_of(v)) for v in variants}, rounds, warmup)
        first = median(seconds[variants[0]])
        for v, (trainer, batches) in runs.items():
            batch = trainer.cfg.train.batch_size
            flops = flops_per_image(trainer, batches) if device == "cpu" else float("nan")
            ips = steps * batch / median(seconds[v])
            yield (
                {"recipe": recipe, "variant": v},
                {
                    "images_per_s": ips,
                    "over_first": first / median(seconds[v]),
                    "batch": batch,
                    "warmup_s": seconds[f"{v}:warmup"][0],
                    "mean_loss": statistics.fmean(losses[v][warmup * steps :]),
                    "gflop_per_image": flops / 1e9,
                    "gflop_per_s": ips * flops / 1e9,
                    "channels_last": trainer.channels_last,
                },
            )


@case(
    "training.speed",
    recipe=Param(RECIPES, quick=("seed", "ddpm-cond")),
    variant=Param(("",), help="'+'-joined: fp32 bf16 channels_last nchw compile threads=N batch=N; '' = as is"),
    steps=Param(5, quick=1, help="timed steps per variant and round"),
    rounds=Param(3, quick=1),
    warmup=Param(2, quick=1),
    data_limit=Param(4096, quick=512, help="training images the recipe indexes"),
)
def speed(recipe, variant, steps, rounds, warmup, data_limit):
    """Training images/s of each recipe (the package's `train_step`), variants timed in turn."""
    for v in variant:
        overrides(v)  # a bad variant is refused before anything trains
    for r in recipe:
        yield from compare(r, variant, steps, rounds, warmup, data_limit=data_limit)


@case(
    "training.time_to_quality",
    recipe=Param(("ddpm-cond", "flow-cond")),
    setting=Param(
        ("ddpm-cond:dpmpp_2m:8:1.35", "flow-cond:euler:8:1.3"),
        help="RECIPE:SAMPLER:STEPS:GUIDANCE the curve samples at (a recipe without one: its own defaults)",
    ),
    every=Param(64_000, quick=512, help="training images between two scores"),
    max_images=Param(3_000_000, quick=1024, help="stop here if FID never gets within the smallest ratio"),
    ratio=Param((10.0, 5.0), help="FID over the train-vs-test baseline FID: the images to each are recorded"),
    n=Param(2000, quick=100, help="digits per score (labels 0-9 in turn); the baseline is at the same N"),
    data_limit=Param(0, quick=2048, help="training images the recipe indexes (0: all)"),
    device=Param("cpu", choices=("cpu", "cuda")),
    out=Param("", help="folder of the runs, kept and resumable (under runs/); '' = a temporary one"),
)
def time_to_quality(recipe, setting, every, max_images, ratio, n, data_limit, device, out):
    """Training images and minutes each recipe needs from scratch to reach FID within 10x and 5x of the baseline.

    Each recipe trains in chunks of `every` images (a resume of its run each time); after each chunk N digits of
    the run's EMA weights at the recipe's setting are scored beside the evaluator's train-vs-test baseline at the
    same N. Minutes are the images over the training images/s measured (evaluation excluded)."""
    if every < 1 or max_images < 1 or n < 2 or not ratio or min(ratio) <= 0:
        raise BenchError("every and max_images take positive image counts, n 2 digits or more, ratio positive numbers.")
    settings = quality_curve.parse_settings(setting)
    for r in recipe:
        quality_curve.check(r, settings.get(r, {}))  # a bad recipe or setting is refused before anything trains
    from mnist_diffusion import UserError

    with tempfile.TemporaryDirectory() as tmp:
        for r in recipe:
            sample = settings.get(r, {})
            try:
                metrics = quality_curve.curve(
                    r, sample, every, max_images, ratio, n, data_limit, device, Path(out or tmp) / r
                )
            except UserError as e:  # e.g. fewer training images than a batch
                raise BenchError(f"{r}: {e}") from None
            yield {"recipe": r, **sample, "ratio": list(ratio)}, metrics
