"""The denoising trajectory: a sampling callback that keeps x_t and the x0 estimate at every sampler step, and the
animated GIF of it (x_t beside the x0 estimate, step by step). Pillow only: drawing the GIF needs no matplotlib,
so `mnist-diffusion sample --gif` does not import it; `figures.trajectory_figure` draws the same as a PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_diffusion.data import to_uint8
from mnist_diffusion.images import caption, labelled_grid, save_gif
from mnist_diffusion.sample_result import SampleResult


class Trajectory:
    """A sampling callback that keeps, at every sampler step, x_t and the x0 estimate of the first `keep`
    images (uint8 (k, 28, 28) each), whatever the batch size."""

    def __init__(self, value_range: str, keep: int = 16):
        self.value_range, self.keep = value_range, keep
        self.x_t: dict[int, list[np.ndarray]] = {}
        self.x0: dict[int, list[np.ndarray]] = {}
        self.t: dict[int, float] = {}

    def __call__(self, step: dict) -> None:
        take = self.keep - step.get("start", 0)
        if take <= 0:
            return
        i = step["i"]
        self.t[i] = step["t"]
        self.x_t.setdefault(i, []).append(to_uint8(step["x_t"][:take].float().cpu(), self.value_range))
        self.x0.setdefault(i, []).append(to_uint8(step["x0"][:take].float().cpu(), self.value_range))

    def steps(self) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(t, x_t, x0) per sampler step, in order."""
        return [(self.t[i], np.concatenate(self.x_t[i]), np.concatenate(self.x0[i])) for i in sorted(self.t)]


def shown_columns(result: SampleResult, keep: int, most: int = 8) -> tuple[list[int], list[str]]:
    """Which images a trajectory figure shows, with their column labels: the first image of each requested
    label (in the order asked) for a conditional model, else the first `most` images."""
    if result.labels is None:
        index = list(range(min(keep, most, len(result))))
        return index, [f"#{i}" for i in index]
    first: dict[int, int] = {}
    for i, label in enumerate(result.labels[:keep]):
        first.setdefault(int(label), i)
    return list(first.values()), [f"digit {d}" for d in first]


def _step_title(i: int, steps: int, t: float, tutorial: bool) -> str:
    return f"step {i + 1}/{steps}  " + (f"amount {t:.2f}" if tutorial else f"t = {t:g}")


def trajectory_frames(trajectory: Trajectory, result: SampleResult, scale: int = 2) -> list[np.ndarray]:
    """The GIF's frames: per sampler step, x_t (top row) and the x0 estimate (bottom), one column per requested
    label, with the step counter on top and the caption below; then the final digits."""
    index, headers = shown_columns(result, trajectory.keep)
    text = caption(result.settings)
    recorded = trajectory.steps()
    tutorial = result.settings.get("sampler") == "tutorial"
    rows = ["x_t", "x0 estimate"]
    frames = []
    for i, (t, x_t, x0) in enumerate(recorded):
        images = np.concatenate([x_t[index], x0[index]])
        frames.append(
            labelled_grid(images, len(index), rows, headers, _step_title(i, len(recorded), t, tutorial), text, scale)
        )
    final = result.images[index]
    frames.append(
        labelled_grid(
            np.concatenate([final, final]),
            len(index),
            ["x_0", "(final)"],
            headers,
            f"done: {len(recorded)} steps",
            text,
            scale,
        )
    )
    return frames


def write_trajectory_gif(
    trajectory: Trajectory, result: SampleResult, path: Path, pipe: object = None, scale: int = 2
) -> Path:
    """The denoising as an animated GIF: x_t beside the x0 estimate at every step, then the final digits.
    `pipe` is not needed (the result's settings caption the frames); it is accepted for older callers."""
    return save_gif(trajectory_frames(trajectory, result, scale), path, scale=1, duration_ms=250)
