"""Image grids and animations as plain uint8 arrays written with Pillow (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_diffusion.files import atomic_write


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """uint8 (N, H, W) -> one uint8 (rows*(H+pad)+pad, nrow*(W+pad)+pad) image, row-major."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[:, 0]
    n, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return out


def _upscale(img: np.ndarray, scale: int) -> Image.Image:
    pil = Image.fromarray(img)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale > 1 else pil


def grid_image(images: np.ndarray, nrow: int | None = None, scale: int = 2) -> Image.Image:
    """A grid of uint8 digits (N, H, W) as a PIL image, each pixel `scale` x `scale`."""
    return _upscale(grid(images, nrow), scale)


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a grid of uint8 digits as PNG (atomically); returns the path."""
    return save_image(grid(images, nrow), path, scale)


def write_npz(path: str | Path, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write samples as .npz (atomically): images uint8 (N, 28, 28) and, if given, labels int64 (N,)."""
    arrays = {"images": images} if labels is None else {"images": images, "labels": labels}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(path, write)


def save_gif(frames: list[np.ndarray], path: str | Path, scale: int = 2, duration_ms: int = 80) -> Path:
    """Write uint8 frames (each an (H, W) grid) as a looping GIF; the last frame is held longer."""
    pils = [_upscale(f, scale) for f in frames]
    durations = [duration_ms] * (len(pils) - 1) + [1500]
    return atomic_write(
        path,
        lambda tmp: pils[0].save(tmp, format="GIF", save_all=True, append_images=pils[1:], duration=durations, loop=0),
    )


def save_image(image: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Write one uint8 (H, W) image as PNG (atomically), each pixel `scale` x `scale`."""
    pil = _upscale(image, scale)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def inpainting_grid(inputs: np.ndarray, masks: np.ndarray, completions: np.ndarray, per_row: int = 16,
                    unknown: int = 96) -> np.ndarray:
    """Blocks of three rows -- the input with its unknown pixels grey, the mask (white = known), the completion --
    for up to `per_row` digits each; uint8 (N, 28, 28) inputs and completions, bool (N, 28, 28) masks."""
    shown = np.where(masks, inputs, unknown).astype(np.uint8)
    blocks = []
    for start in range(0, len(inputs), per_row):
        rows = [shown[start:start + per_row], (masks[start:start + per_row] * 255).astype(np.uint8),
                completions[start:start + per_row]]
        blocks.append(grid(np.concatenate(rows), nrow=len(rows[0])))
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in blocks])
