"""Image grids and animations as plain uint8 arrays written with Pillow (no torchvision).

One colour convention everywhere: 0 = black background, 255 = white stroke, as MNIST stores digits. Labels
and captions are drawn in PIL's default font, light grey on the same black.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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


TEXT = 220  # grey level of labels and captions
SEPARATOR = 70  # grey between the cells of a labelled grid
FONT_SIZE = 12


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)
    except (TypeError, ValueError, OSError):  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def text_size(text: str) -> tuple[int, int]:
    """(width, height) in pixels of one line of `text` in the labels' font."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=_font())
    return right - left, bottom - top


def label_margins(
    row_labels=None, col_labels=None, title: str | None = None, caption: str | None = None
) -> tuple[int, int, int]:
    """(left, top, bottom) margins in pixels that `labelled_grid` adds for these labels."""
    line = text_size("Ag0")[1] + 6
    left = max((text_size(str(r))[0] for r in row_labels), default=0) + 8 if row_labels else 0
    top = (line if title else 0) + (line if col_labels else 0)
    return left, top, line if caption else 0


def caption(settings: dict, guidance: str | None = None) -> str:
    """One line naming what made some samples, from `SampleResult.settings`: model, sampler, steps, guidance
    (or the text `guidance`, for figures whose columns differ in it)."""
    if settings.get("reconstructions"):
        return f"model {settings.get('model', '?')} (autoencoder reconstructions)"
    parts = [
        f"model {settings.get('model', '?')}",
        f"sampler {settings.get('sampler', '?')}",
        f"{settings.get('steps', '?')} steps",
    ]
    if settings.get("process") in ("flow", "meanflow"):  # a grid of times in [0, 1], uniform unless shifted
        if settings.get("shift", 1.0) != 1.0:
            parts.append(f"shift {settings['shift']:g}")
    elif settings.get("sampler") not in (None, "tutorial"):
        parts.append(f"{settings.get('spacing', '')} spacing".strip())
    if settings.get("sampler") not in (None, "tutorial", "meanflow"):
        parts.append(guidance or f"guidance {settings.get('guidance', 1.0):g}")
        if settings.get("guidance_interval"):
            low, high = settings["guidance_interval"]
            parts.append(f"guided where {low:g} < sigma <= {high:g}")
        if settings.get("eta"):
            parts.append(f"eta {settings['eta']:g}")
    if "seed" in settings:
        parts.append(f"seed {settings['seed']}")
    return ", ".join(parts)


def labelled_grid(
    images: np.ndarray,
    nrow: int | None = None,
    row_labels=None,
    col_labels=None,
    title: str | None = None,
    caption: str | None = None,
    scale: int = 2,
) -> np.ndarray:
    """A grid of uint8 digits (N, H, W), each pixel `scale` x `scale`, with a label left of each row, one above
    each column, a title line on top and a caption line below; uint8 (H', W'), white on black.

    The digits sit at offset `label_margins(...)[:2]` (left, top), as `grid` (upscaled, cells separated by grey)
    draws them; the image is widened, if need be, to fit the title and caption.
    """
    g = np.asarray(_upscale(grid(images, nrow, pad_value=SEPARATOR), scale))
    images = np.asarray(images)
    _, h, w = (images[:, 0] if images.ndim == 4 else images).shape
    left, top, bottom = label_margins(row_labels, col_labels, title, caption)
    widest = max((text_size(s)[0] + 8 for s in (title, caption) if s), default=0)
    width = max(left + g.shape[1], widest)
    canvas = Image.new("L", (width, top + g.shape[0] + bottom), 0)
    canvas.paste(Image.fromarray(g), (left, top))
    draw, font, line = ImageDraw.Draw(canvas), _font(), text_size("Ag0")[1] + 6
    cell_w, cell_h, pad = (w + 2) * scale, (h + 2) * scale, 2 * scale
    if title:
        draw.text((4, 2), title, fill=TEXT, font=font)
    if col_labels:
        for c, label in enumerate(col_labels):
            x = left + pad + c * cell_w + (w * scale - text_size(str(label))[0]) // 2
            draw.text((x, top - line + 2), str(label), fill=TEXT, font=font)
    if row_labels:
        for r, label in enumerate(row_labels):
            y = top + pad + r * cell_h + (h * scale - text_size(str(label))[1]) // 2
            draw.text((4, y), str(label), fill=TEXT, font=font)
    if caption:
        draw.text((4, top + g.shape[0] + 3), caption, fill=TEXT, font=font)
    return np.asarray(canvas)


GIF_LEVELS = 32  # grey levels in a GIF: noisy frames barely compress, and fewer levels make a much smaller file


def save_gif(frames: list[np.ndarray], path: str | Path, scale: int = 2, duration_ms: int = 80) -> Path:
    """Write uint8 frames (each (H, W)) as a looping GIF of `GIF_LEVELS` grey levels; the last frame is held
    longer. Frames of different sizes are padded with black, at the right and bottom, to the largest."""
    height, width = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    step = 255 / (GIF_LEVELS - 1)
    frames = [
        (np.round(np.pad(f, ((0, height - f.shape[0]), (0, width - f.shape[1]))) / step) * step).astype(np.uint8)
        for f in frames
    ]
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


def inpainting_grid(
    inputs: np.ndarray, masks: np.ndarray, completions: np.ndarray, per_row: int = 16, unknown: int = 96
) -> np.ndarray:
    """Blocks of three rows -- the input with its unknown pixels grey, the mask (white = known), the completion --
    for up to `per_row` digits each; uint8 (N, 28, 28) inputs and completions, bool (N, 28, 28) masks."""
    shown = np.where(masks, inputs, unknown).astype(np.uint8)
    blocks = []
    for start in range(0, len(inputs), per_row):
        rows = [
            shown[start : start + per_row],
            (masks[start : start + per_row] * 255).astype(np.uint8),
            completions[start : start + per_row],
        ]
        blocks.append(grid(np.concatenate(rows), nrow=len(rows[0])))
    width = max(b.shape[1] for b in blocks)
    return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in blocks])
