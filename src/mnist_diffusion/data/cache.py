"""The on-disk cache: downloaded IDX files and decoded uint8 arrays.

Decoding is done once; the result is kept as two `.npy` files per (dataset, source, split),
e.g. ``mnist-pypi-f11bb9e41d6c-train-images.npy`` (uint8, (N, 28, 28)) and
``mnist-pypi-f11bb9e41d6c-train-labels.npy`` (int64, (N,)), the source named with the first digits of
the sha256 of the files decoded (so other bytes never hit this entry). `.npy` is read with ``allow_pickle=False``,
so a cache file can hold numbers only. Every write goes to a temporary file in the same
directory and is moved into place (`files.atomic_write`), so readers see either the old file,
the new one or none -- never half of one.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np

from mnist_diffusion.files import atomic_write

CACHE_ENV = "MNIST_DIFFUSION_CACHE"


def cache_dir() -> pathlib.Path:
    """Cache directory: ``$MNIST_DIFFUSION_CACHE`` if set, else ``~/.cache/mnist-diffusion`` (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "mnist-diffusion"


def _atomic_save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    atomic_write(path, write)


def _paths(dataset: str, source: str, split: str, root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    stem = f"{dataset}-{source}-{split}"
    return root / f"{stem}-images.npy", root / f"{stem}-labels.npy"


def load_decoded(dataset: str, source: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached (images uint8 (N,28,28), labels int64 (N,)) or None if absent or not of that form.

    A cache entry of the wrong dtype/shape (another version, a damaged disk) counts as absent,
    so it is decoded again and overwritten rather than trusted.
    """
    img_path, lab_path = _paths(dataset, source, split, cache_dir())
    if not (img_path.is_file() and lab_path.is_file()):
        return None
    try:
        images = np.load(img_path, allow_pickle=False)
        labels = np.load(lab_path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = (
        images.dtype == np.uint8
        and images.ndim == 3
        and images.shape[1:] == (28, 28)
        and labels.dtype == np.int64
        and labels.shape == (images.shape[0],)
        and images.shape[0] > 0
        and int(labels.min()) >= 0
        and int(labels.max()) <= 9
    )
    return (images, labels) if ok else None


def save_decoded(dataset: str, source: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Store a decoded split; a cache that cannot be written only warns (the data is still returned)."""
    img_path, lab_path = _paths(dataset, source, split, cache_dir())
    try:
        # labels first: `load_decoded` needs both, and images are the larger write.
        _atomic_save_npy(lab_path, np.ascontiguousarray(labels, dtype=np.int64))
        _atomic_save_npy(img_path, np.ascontiguousarray(images, dtype=np.uint8))
    except OSError as exc:
        warnings.warn(
            f"could not write the decoded-data cache in {img_path.parent} ({exc}); "
            f"set {CACHE_ENV} to a writable directory to avoid decoding again next time.",
            stacklevel=3,
        )
