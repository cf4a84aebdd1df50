"""What sampling and inpainting return: the digits as uint8 arrays, their labels and settings, with a grid view."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mnist_diffusion.errors import UserError
from mnist_diffusion.files import atomic_write
from mnist_diffusion.images import caption, grid_image, labelled_grid, write_npz


@dataclass
class SampleResult:
    """What `Pipeline.sample` returns.

    images: uint8 (n, 28, 28), 0 = black background, 255 = white stroke (MNIST's convention).
    labels: int64 (n,) requested classes, or None for an unconditional model.
    settings: the sampler settings, seed and model that made them, and the seconds it took.
    """

    images: np.ndarray
    labels: np.ndarray | None
    samples: torch.Tensor = field(repr=False)  # float (n, C, 28, 28) in the model's data range, before rounding
    value_range: str = "signed"
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice) -> SampleResult:
        """A slice of the result, e.g. out[:16]."""
        if not isinstance(index, slice):
            raise TypeError("index a SampleResult with a slice (out[:16]); out.images[i] is image i")
        labels = None if self.labels is None else self.labels[index]
        return SampleResult(self.images[index], labels, self.samples[index], self.value_range, self.settings)

    def tensor(self) -> torch.Tensor:
        """The samples as float (n, C, 28, 28) in the model's data range ([-1, 1] 'signed', [0, 1] 'unit')."""
        return self.samples

    def _nrow(self, nrow: int | None) -> int | None:
        """10 per row when the labels cycle through ten digits, so each column is one digit."""
        if nrow is None and self.labels is not None and len(self) % 10 == 0 and len(np.unique(self.labels)) == 10:
            return 10
        return nrow

    def grid(self, nrow: int | None = None, scale: int = 2) -> Image.Image:
        """A PIL image of the digits, `nrow` per row (default: one column per digit when labels cycle 0-9)."""
        return grid_image(self.images, nrow=self._nrow(nrow), scale=scale)

    def _repr_png_(self) -> bytes:  # Jupyter shows a result as its grid
        buffer = io.BytesIO()
        self.grid().save(buffer, format="PNG")
        return buffer.getvalue()

    def labelled_grid(self, nrow: int | None = None, scale: int = 2) -> Image.Image:
        """The grid with the digit asked for above each column (when every column holds one digit) and a caption
        line naming the model, sampler, steps, guidance and seed."""
        nrow = self._nrow(nrow)
        per_row = nrow or int(np.ceil(np.sqrt(len(self))))
        columns = None
        if self.labels is not None and len(self) >= per_row:
            first = self.labels[:per_row]
            rows = [self.labels[i : i + per_row] for i in range(0, len(self) - len(self) % per_row, per_row)]
            if all(np.array_equal(r, first) for r in rows):
                columns = [f"digit {d}" if per_row <= 10 else str(d) for d in first]
        return Image.fromarray(
            labelled_grid(self.images, per_row, col_labels=columns, caption=caption(self.settings), scale=scale)
        )

    def save(self, path: str | Path, nrow: int | None = None) -> Path:
        """Write the labelled grid (`.png`, see `labelled_grid`) or the arrays (`.npz`: images uint8 (n, 28, 28)
        [+ labels int64 (n,)])."""
        path = Path(path)
        if path.suffix == ".npz":
            return write_npz(path, self.images, self.labels)
        if path.suffix != ".png":
            raise UserError(f"{path}: a sample result is saved as .png (a grid) or .npz (the arrays).")
        image = self.labelled_grid(nrow)
        return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
