"""The on-disk cache: downloaded IDX files and decoded uint8 arrays.

Decoding is done once; the result is kept as two `.npy` files per (dataset, source, split),
e.g. ``mnist-pypi-f11bb9e41d6c-train-images.npy`` (uint8, (N, 28, 28)) and
``mnist-pypi-f11bb9e41d6c-train-labels.npy`` (int64, (N,)), the source named with the first digits of
the sha256 of the files decoded (so other bytes never hit this entry). `.npy` is read with ``allow_pickle=False``,
so a cache file can hold numbers only. Every write goes to a temporary file in the same
directory and is moved into place (`files.atomic_write`), so readers see either the old file,
the new one or none -- never half of one.

A third file, ``...-sha256.json``, written last, records the source and the sha256 of both arrays; an entry is
used only when its arrays still hash to what was recorded. Anything else (a damaged disk, an edited file, an
entry from a version that recorded nothing) counts as absent: the split is decoded again from its source and
the entry rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings

import numpy as np

from mnist_diffusion.errors import UserError
from mnist_diffusion.files import atomic_write, atomic_write_text, parse_json

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


def _record_path(img_path: pathlib.Path) -> pathlib.Path:
    return img_path.with_name(img_path.name.removesuffix("-images.npy") + "-sha256.json")


def _record(source: str, images: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """What an entry's checksum file holds: its source and the sha256 of each array's bytes."""
    return {
        "source": source,
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).data).hexdigest(),
        "labels_sha256": hashlib.sha256(np.ascontiguousarray(labels).data).hexdigest(),
    }


def _recorded(path: pathlib.Path) -> dict | None:
    try:
        record = parse_json(path.read_text(), str(path), max_chars=4096)
    except (OSError, UnicodeDecodeError, UserError):
        return None
    return record if isinstance(record, dict) else None


def load_decoded(dataset: str, source: str, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached (images uint8 (N,28,28), labels int64 (N,)) or None if absent or not of that form.

    A cache entry of the wrong dtype/shape, or whose arrays no longer hash to what was recorded when it was
    written (another version, a damaged disk, an edited file), counts as absent, so it is decoded again and
    overwritten rather than trusted.
    """
    img_path, lab_path = _paths(dataset, source, split, cache_dir())
    record = _recorded(_record_path(img_path))
    if record is None or not (img_path.is_file() and lab_path.is_file()):
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
    if not ok:
        return None
    if _record(source, images, labels) != record:
        warnings.warn(
            f"the decoded-data cache entry {img_path.name} does not match the checksum recorded when it was "
            "written; decoding the data again from its source.",
            stacklevel=3,
        )
        return None
    return images, labels


def save_decoded(dataset: str, source: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Store a decoded split; a cache that cannot be written only warns (the data is still returned)."""
    img_path, lab_path = _paths(dataset, source, split, cache_dir())
    try:
        # labels first: `load_decoded` needs both, and images are the larger write.
        _atomic_save_npy(lab_path, np.ascontiguousarray(labels, dtype=np.int64))
        _atomic_save_npy(img_path, np.ascontiguousarray(images, dtype=np.uint8))
        record = _record(source, np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64))
        atomic_write_text(_record_path(img_path), json.dumps(record, indent=1) + "\n")  # last: the entry is whole
    except OSError as exc:
        warnings.warn(
            f"could not write the decoded-data cache in {img_path.parent} ({exc}); "
            f"set {CACHE_ENV} to a writable directory to avoid decoding again next time.",
            stacklevel=3,
        )
