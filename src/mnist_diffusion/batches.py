"""How `Pipeline.sample` and `Pipeline.inpaint` cut n images into batches: labels, starting noise and generators.

Reproducibility: image i of a call with `seed=S` starts from noise drawn with seed S + i, so deterministic
samplers give the same image i whatever `n` and the batch size. Stochastic samplers draw their per-step noise
from one generator per batch, seeded from S and the batch's first index (`step_seed`), so there the whole call
is reproducible for a given batch size.

Bounds, checked before any memory or time is spent: at most `MAX_SAMPLES` images a call, seeds from 0 to
`MAX_SEED` (any non-negative signed 64-bit number), labels of the model's classes (a range is checked as it is
parsed, not listed first), whole numbers that are not booleans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm  # a text bar everywhere: tqdm.auto warns in a notebook kernel without ipywidgets

from mnist_diffusion.errors import UserError

StepCallback = Callable[[dict], "torch.Tensor | None"]

MAX_SAMPLES = 1_000_000  # images in one call of `Pipeline.sample` or `Pipeline.inpaint`
MAX_SEED = 2**63 - 1  # the largest seed: any non-negative signed 64-bit number
MAX_RESAMPLE = 100  # RePaint's repeats of each inpainting step
_GENERATOR_SEEDS = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


def check_whole(name: str, value, low: int, high: int) -> int:
    """`value` as a whole number in [low, high] (a bool is not one), or a UserError naming `name` and the range."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or not low <= value <= high:
        raise UserError(f"{name} must be a whole number from {low:,} to {high:,}, got {value!r}.")
    return int(value)


def step_seed(seed: int, start: int) -> int:
    """The seed of the step-noise generator of the batch that starts at image `start` of a call with `seed`.

    seed * 7919 + start wherever torch's generators take it (every seed up to about 2.3e15), so the digits
    drawn at those seeds never change; beyond, the same number folded into 64 bits by a hash."""
    value = seed * 7919 + start
    if value < _GENERATOR_SEEDS:
        return value
    digest = hashlib.blake2b(value.to_bytes(16, "little"), digest_size=8, person=b"mnist-diff-step").digest()
    return int.from_bytes(digest, "little")


def parse_labels(spec, num_classes: int) -> list[int] | None:
    """None | '0-9' | '7' | '3,5,8' | 7 | [3, 5, 8] -> a list of class indices, checked against num_classes.

    >>> parse_labels("0-3,7", 10)
    [0, 1, 2, 3, 7]
    >>> parse_labels(None, 10) is None
    True
    """
    if spec is None or (isinstance(spec, str) and spec.strip() == ""):
        return None
    if num_classes == 0:
        raise UserError(f"labels {spec!r} were given, but this model is unconditional; leave the labels out.")
    if isinstance(spec, str):
        out: list[int] = []
        for part in spec.split(","):
            lo, hi = _label_range(part.strip(), spec)
            if not (0 <= lo <= hi < num_classes):  # checked before the range is listed: 0-999999999 lists nothing
                bad = lo if not 0 <= lo < num_classes else hi
                raise UserError(_out_of_range(spec, bad, num_classes) if lo <= hi else _not_understood(spec))
            out.extend(range(lo, hi + 1))
    else:
        values = np.atleast_1d(np.asarray(spec))
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise UserError(f"labels must be whole class numbers, got {values.dtype} of shape {values.shape}.")
        bad = values[(values < 0) | (values >= num_classes)]
        if len(bad):
            raise UserError(_out_of_range(spec, int(bad[0]), num_classes))
        out = [int(v) for v in values]
    if not out:
        raise UserError(f"labels {spec!r} name no class; classes run from 0 to {num_classes - 1}.")
    return out


def _label_range(part: str, spec: str) -> tuple[int, int]:
    """'3-5' -> (3, 5); '7' -> (7, 7)."""
    try:
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            return int(lo), int(hi)
        return int(part), int(part)
    except ValueError:
        raise UserError(_not_understood(spec)) from None


def _not_understood(spec) -> str:
    return f"labels {spec!r} are not understood; write e.g. 0-9, 7 or 3,5,8."


def _out_of_range(spec, bad: int, num_classes: int) -> str:
    shown = spec if len(str(spec)) <= 40 else f"{str(spec)[:37]}..."
    return f"labels {shown!r} name class {bad}; classes run from 0 to {num_classes - 1}."


def cycled_labels(spec, num_classes: int, n: int, every_class: bool) -> np.ndarray | None:
    """int64 (n,) labels cycling through `spec` (`parse_labels`); with no spec, every class in turn when
    `every_class` (a conditional model's samples), else None. n is checked (1 .. `MAX_SAMPLES`) first."""
    check_whole("n", n, 1, MAX_SAMPLES)
    classes = parse_labels(spec, num_classes)
    if classes is None and every_class and num_classes:
        classes = list(range(num_classes))
    return None if classes is None else np.array(classes, dtype=np.int64)[np.arange(n) % len(classes)]


def initial_noise(n: int, shape: tuple[int, ...], seed: int, kind: str, device: torch.device, offset: int = 0):
    """Per-image starting noise (n, *shape): image i from its own generator seeded with seed + offset + i."""
    xs = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + offset + i)
        xs.append(torch.rand(shape, generator=g) if kind == "uniform" else torch.randn(shape, generator=g))
    return torch.stack(xs).to(device)


@dataclass
class Batch:
    """Images start .. start + size - 1 of a call: their starting noise z_T, labels and step-noise generator."""

    start: int
    size: int
    z_T: torch.Tensor
    labels: torch.Tensor | None
    generator: torch.Generator


def batches(
    n: int,
    batch_size: int,
    shape: tuple[int, ...],
    noise: str,
    seed: int,
    labels: np.ndarray | None,
    device: torch.device,
) -> Iterator[Batch]:
    """The batches of an n-image call, in order; the seed is checked (0 .. `MAX_SEED`) before the first."""
    check_whole("seed", seed, 0, MAX_SEED)
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        lab = None if labels is None else torch.from_numpy(labels[start : start + size]).to(device)
        yield Batch(
            start,
            size,
            initial_noise(size, shape, seed, noise, device, offset=start),
            lab,
            torch.Generator(device=device).manual_seed(step_seed(seed, start)),
        )


def progress_bar(n: int, batch_size: int, steps_per_batch: int, show: bool, desc: str) -> tqdm:
    """A tqdm bar over every sampler step of every batch (hidden unless `show`)."""
    return tqdm(total=-(-n // batch_size) * steps_per_batch, disable=not show, unit="step", desc=desc)


def with_progress(callback: StepCallback | None, bar: tqdm, start: int) -> StepCallback | None:
    """The user's callback (told which images the batch holds, as `start`) followed by one tick of the bar."""
    if callback is None and bar.disable:
        return None

    def step(info: dict) -> torch.Tensor | None:
        out = callback({**info, "start": start}) if callback is not None else None
        bar.update(1)
        return out

    return step
