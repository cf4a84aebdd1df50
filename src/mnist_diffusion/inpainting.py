"""What completing digits takes beside the maths of `diffusion/inpaint.py`: the checked images and masks, half
masks, and the step callback that holds the known region in whichever noise process and sample space."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mnist_diffusion.batches import MAX_RESAMPLE, check_whole
from mnist_diffusion.errors import UserError

INPAINT_METHODS = ("project", "replace")
# Completions keep improving with sampler steps well past where plain samples stop (benchmarks: the
# `quality.inpainting` suite in docs/results.md), so completing takes at least this many unless told.
INPAINT_MIN_STEPS = 20


def check_inpainting_input(images, mask) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and a mask of the same shape with, in every image, known and unknown pixels;
    returns the images and the mask as float32 0/1 (1 = known). Anything else is a UserError naming it."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        what = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise UserError(f"images must be a uint8 numpy array (N, 28, 28) with pixels 0-255, got {what}.")
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise UserError(f"images must have shape (N, 28, 28), got {images.shape}.")
    if isinstance(mask, str):
        raise UserError(
            f"the mask is {mask!r}, a string; give an array, e.g. half_mask({mask!r}, n) from "
            "mnist_diffusion.inpainting (top, bottom, left or right)."
        )
    mask = np.asarray(mask)
    mask = mask[None] if mask.ndim == 2 and len(images) == 1 else mask
    if mask.shape != images.shape:
        raise UserError(
            f"the mask has shape {mask.shape} but the images {images.shape}; give one 28x28 mask per "
            "image (nonzero = known)."
        )
    known = (mask != 0).reshape(len(mask), -1)
    if not known.any(axis=1).all():
        raise UserError(
            f"the mask of image {int(np.flatnonzero(~known.any(axis=1))[0])} marks no pixel as known; "
            "there is nothing to complete from (use sample for a new digit)."
        )
    if not (~known).any(axis=1).all():
        raise UserError(
            f"the mask of image {int(np.flatnonzero(~(~known).any(axis=1))[0])} marks every pixel as "
            "known; there is nothing to fill in."
        )
    return images, (mask != 0).astype(np.float32)


def check_inpainting_options(resample, method: str, labels, guidance) -> None:
    """Refuse, in one sentence each, a resampling count that is not a whole number >= 1, an unknown method, and
    guidance without labels to guide towards."""
    check_whole("resample", resample, 1, MAX_RESAMPLE)
    if method not in INPAINT_METHODS:
        raise UserError(f"method must be one of {', '.join(INPAINT_METHODS)}, got {method!r}.")
    if labels is None and guidance not in (None, 1.0):
        raise UserError(f"guidance {guidance} needs labels to guide towards; give labels or leave guidance out.")


def half_mask(side: str, n: int = 1) -> np.ndarray:
    """(n, 28, 28) float32 masks keeping one half of each digit: side = top | bottom | left | right."""
    mask = np.zeros((28, 28), np.float32)
    halves = {
        "top": (slice(0, 14), slice(None)),
        "bottom": (slice(14, 28), slice(None)),
        "left": (slice(None), slice(0, 14)),
        "right": (slice(None), slice(14, 28)),
    }
    if side not in halves:
        raise UserError(f"the half to keep is {side!r}; choose top, bottom, left or right.")
    mask[halves[side]] = 1.0
    return np.repeat(mask[None], n, axis=0)


def holding_known_region(
    process, space, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, method: str
) -> Callable[[dict], torch.Tensor | None]:
    """The sampler-level callback that keeps the known region: known, mask (B, 1, 28, 28) in pixels.

    'project' pastes the known pixels into each step's clean estimate (decoded and encoded again in a latent
    space) and lets the process rebuild x_t around it; 'replace' puts the known region of x_t back on the forward
    process with fresh noise (for latents, the cells whose pixels are all known)."""
    if method == "project":
        return process.projection(lambda z0: space.encode(mask * known + (1 - mask) * space.decode(z0)))
    z_known, z_mask = space.known_region(known, mask)
    return process.replacement(z_known, z_mask, generator)
