"""Image grids and animations as plain uint8 arrays written with Pillow (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_diffusion.checkpoint import atomic_write


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


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a grid of uint8 digits as PNG (atomically); returns the path."""
    path = Path(path)
    pil = _upscale(grid(images, nrow), scale)
    atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))
    return path


def save_gif(frames: list[np.ndarray], path: str | Path, scale: int = 2, duration_ms: int = 80) -> Path:
    """Write uint8 frames (each an (H, W) grid) as a looping GIF; the last frame is held longer."""
    path = Path(path)
    pils = [_upscale(f, scale) for f in frames]
    durations = [duration_ms] * (len(pils) - 1) + [1500]
    atomic_write(
        path,
        lambda tmp: pils[0].save(tmp, format="GIF", save_all=True, append_images=pils[1:], duration=durations, loop=0),
    )
    return path
