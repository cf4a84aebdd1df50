"""Masks of test digits for the completion benchmark, each family standing for one way the page is used:
half masks (a digit cut in two), strokes (part of a digit drawn by hand on a black canvas: only the drawn pixels
are known, the rest of the canvas is open) and erasures (a generated digit with free-form brush marks rubbed out).
Each function returns float32 (N, 28, 28) masks, 1 = known, seeded so that every run sees the same masks."""

from __future__ import annotations

from collections import deque

import numpy as np

HALVES = ("top", "bottom", "left", "right")
FAMILIES = (*HALVES, "strokes", "erasures")
INK = 64  # a pixel brighter than this is part of a stroke (MNIST's strokes have soft grey edges)
NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def masks(family: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The masks of `family` (one of FAMILIES) for uint8 `images` (N, 28, 28)."""
    if family in HALVES:
        from mnist_diffusion.inpainting import half_mask

        return half_mask(family, len(images))
    make = {"strokes": stroke_mask, "erasures": erasure_mask}[family]
    return np.stack([make(image, np.random.default_rng([seed, i])) for i, image in enumerate(images)])


def _disc(centres: list[tuple[float, float]], radius: float) -> np.ndarray:
    """The pixels within `radius` of any of `centres` (y, x), as a (28, 28) bool array."""
    yy, xx = np.mgrid[0:28, 0:28] + 0.5
    out = np.zeros((28, 28), bool)
    for y, x in centres:
        out |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
    return out


def stroke_mask(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Part of the digit as a hand would draw it: one or two connected runs of its stroke pixels (grown from a
    random stroke pixel along the stroke, together 30-60% of them) with their grey edges. Only those pixels are
    known; the black around them is not (on the page a drawing says nothing about the canvas it leaves empty)."""
    ink = image > INK
    cells = np.argwhere(ink)
    target = int(len(cells) * rng.uniform(0.3, 0.6))
    chosen = np.zeros((28, 28), bool)
    pieces = int(rng.integers(1, 3))
    for _ in range(pieces):
        queue, grown = deque([tuple(cells[rng.integers(len(cells))])]), 0
        while queue and grown < max(target // pieces, 1):
            y, x = queue.popleft()
            if chosen[y, x]:
                continue
            chosen[y, x] = True
            grown += 1
            for dy, dx in NEIGHBOURS:
                if 0 <= y + dy < 28 and 0 <= x + dx < 28 and ink[y + dy, x + dx] and not chosen[y + dy, x + dx]:
                    queue.append((y + dy, x + dx))
    edge = np.zeros((28, 28), bool)  # the grey rim next to the chosen run, as a drawn stroke has
    for dy, dx in NEIGHBOURS:
        edge |= np.roll(np.roll(chosen, dy, 0), dx, 1)
    return (chosen | (edge & (image > 0))).astype(np.float32)


def erasure_mask(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A digit with free-form eraser marks: one to three brush paths (radius 2-3 pixels, random turns) that
    start on the digit's strokes; everything off the paths is known."""
    cells = np.argwhere(image > INK)
    centres: list[tuple[float, float]] = []
    for _ in range(rng.integers(1, 4)):
        y, x = cells[rng.integers(len(cells))] + 0.5
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(3, 9)):
            centres.append((y, x))
            heading += rng.normal(0, 0.6)
            y, x = np.clip(y + 1.5 * np.sin(heading), 0, 28), np.clip(x + 1.5 * np.cos(heading), 0, 28)
    return (~_disc(centres, rng.uniform(2.0, 3.0))).astype(np.float32)
