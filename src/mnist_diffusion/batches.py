"""How `Pipeline.sample` and `Pipeline.inpaint` cut n images into batches: labels, starting noise and generators.

Reproducibility: image i of a call with `seed=S` starts from noise drawn with seed S + i, so deterministic
samplers give the same image i whatever `n` and the batch size. Stochastic samplers draw their per-step noise
from one generator per batch, seeded from S and the batch's first index, so there the whole call is
reproducible for a given batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from mnist_diffusion.errors import UserError

StepCallback = Callable[[dict], "torch.Tensor | None"]


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
        try:
            for part in spec.split(","):
                part = part.strip()
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    out.extend(range(int(lo), int(hi) + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise UserError(f"labels {spec!r} are not understood; write e.g. 0-9, 7 or 3,5,8.") from None
    else:
        values = np.atleast_1d(np.asarray(spec))
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise UserError(f"labels must be whole class numbers, got {values.dtype} of shape {values.shape}.")
        out = [int(v) for v in values]
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad or not out:
        raise UserError(
            f"labels {spec!r} name class {bad[0] if bad else '(none)'}; classes run from 0 to {num_classes - 1}."
        )
    return out


def cycled_labels(spec, num_classes: int, n: int, every_class: bool) -> np.ndarray | None:
    """int64 (n,) labels cycling through `spec` (`parse_labels`); with no spec, every class in turn when
    `every_class` (a conditional model's samples), else None."""
    classes = parse_labels(spec, num_classes)
    if classes is None and every_class and num_classes:
        classes = list(range(num_classes))
    return None if classes is None else np.array([classes[i % len(classes)] for i in range(n)], dtype=np.int64)


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
    """The batches of an n-image call, in order."""
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        lab = None if labels is None else torch.from_numpy(labels[start : start + size]).to(device)
        yield Batch(
            start,
            size,
            initial_noise(size, shape, seed, noise, device, offset=start),
            lab,
            torch.Generator(device=device).manual_seed(seed * 7919 + start),
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
