"""Command-line options that several commands share, with their choices taken from the config types and the
sampler registry."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from mnist_diffusion.batches import MAX_SAMPLES, MAX_SEED
from mnist_diffusion.config import GUIDANCE_RANGE, SampleConfig, TrainConfig, choices
from mnist_diffusion.diffusion import samplers
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import MODEL_DEFAULT


def sampler_help() -> str:
    """--sampler's help: every registered sampler with its one-line description, by the models it serves."""
    kinds = dict.fromkeys(k for s in samplers.SAMPLERS.values() for k in s.kinds)
    return "; ".join(
        f"for {kind} models: " + ", ".join(f"{n} ({samplers.get(n).description})" for n in samplers.names(kind))
        for kind in kinds
    )


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], refused while the command line is parsed (before any
    model is loaded or memory spent) with the range in the sentence."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low:,} to {high:,}, got {text!r}")
        return value

    return parse


def guidance(text: str) -> float:
    """An argparse type: a guidance scale in `config.GUIDANCE_RANGE`, the one range the config and the page use."""
    low, high = GUIDANCE_RANGE
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, got {text!r}")
    return value


def add_seed_option(
    p: argparse.ArgumentParser, meaning: str = "image i starts from noise seeded with SEED + i"
) -> None:
    """--seed: a whole number from 0 to `batches.MAX_SEED` (default 0)."""
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=0, help=f"{meaning} (0 to 2**63 - 1; default 0)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """--sampler, --steps, --guidance, --guidance-interval, --labels, --spacing, --eta, --shift, --batch-size."""
    g = p.add_argument_group("sampling (defaults: the model's own settings)")
    g.add_argument("--sampler", choices=samplers.names(), metavar="SAMPLER", help=sampler_help())
    g.add_argument("--steps", type=int, help="number of sampler steps (grid points)")
    low, high = GUIDANCE_RANGE
    g.add_argument("--guidance", type=guidance, help=f"classifier-free guidance scale, {low:g} to {high:g} (1 = none)")
    g.add_argument(
        "--guidance-interval",
        metavar="LOW,HIGH",
        help="guide only where the noise level sigma is in (LOW, HIGH]; 'all' = every step",
    )
    g.add_argument("--labels", help="digits to draw, cycling: 0-9 | 7 | 3,5,8 (conditional models)")
    g.add_argument("--spacing", choices=choices(SampleConfig, "spacing"), help="timestep spacing")
    g.add_argument("--eta", type=float, help="DDIM eta (0 = deterministic, 1 = DDPM-like)")
    g.add_argument(
        "--shift",
        type=float,
        help="flow models: the grid's timestep shift (1 = uniform; > 1 puts more steps where noise dominates)",
    )
    g.add_argument("--batch-size", type=whole(1, MAX_SAMPLES), help="images per batch")


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """--precision auto|fp32|bf16 (default auto: bf16 where this device runs it fast, else fp32)."""
    p.add_argument(
        "--precision",
        choices=choices(TrainConfig, "precision"),
        default=None,
        help="numerics: auto (default: bf16 on CPUs with AMX / AVX-512-BF16 units and for CUDA "
        "training, else fp32) | fp32 | bf16",
    )


def add_compile_option(p: argparse.ArgumentParser) -> None:
    """--compile: sample through torch.compile (seconds to compile; pays off over thousands of digits)."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the network under torch.compile: the first batch compiles (seconds), the rest run "
        "faster, most with bf16 on CPUs (benchmarks/results/precision.md)",
    )


def parse_interval(text: str | None):
    """'0.3,5' -> (0.3, 5.0); 'all' -> None (every step); None -> the model's default."""
    if text is None:
        return MODEL_DEFAULT
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--guidance-interval {text!r} must be two noise levels LOW,HIGH (e.g. 0.3,5) or 'all'."
        ) from None
    return (low, high)


def sampling_settings(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Pipeline.sample` that the sampling options give."""
    return {
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "labels": args.labels,
        "spacing": args.spacing,
        "eta": args.eta,
        "shift": args.shift,
        "batch_size": args.batch_size,
        "guidance_interval": parse_interval(args.guidance_interval),
    }
