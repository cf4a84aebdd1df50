"""Reference statistics of a real split, cached on disk and tied to one evaluator and one data set.

A cache file holds the split's evaluator features (float32, as the network computes them), predicted
classes, and the sha256 of both the evaluator weights and the split's pixel bytes. A file whose
recorded hashes differ from the current ones is never used -- it is recomputed and replaced -- so
statistics of different networks or different data are never mixed. Files are plain `.npz` read
with ``allow_pickle=False``.

Also here: each training image's distance to its nearest other training image (pixel space), the
yardstick of the memorisation check, filled in on demand and kept in the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
from dataclasses import dataclass

import numpy as np

from mnist_diffusion.data import cache_dir
from mnist_diffusion.evaluation.evaluator_file import Evaluator
from mnist_diffusion.evaluation.features import extract
from mnist_diffusion.evaluation.metrics import feature_statistics, nearest_neighbours
from mnist_diffusion.files import atomic_write

CACHE_VERSION = 1


@dataclass(frozen=True)
class ReferenceStats:
    dataset: str
    split: str
    features: np.ndarray  # float64 (N, D)
    predicted: np.ndarray  # int64 (N,)
    mu: np.ndarray  # float64 (D,)
    sigma: np.ndarray  # float64 (D, D)
    evaluator_sha256: str
    data_sha256: str

    @property
    def n(self) -> int:
        return len(self.features)


def _cache_root() -> pathlib.Path:
    return cache_dir() / "evaluation"


def data_fingerprint(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


def _atomic_savez(path: pathlib.Path, **arrays) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    with contextlib.suppress(OSError):  # a cache that cannot be written only costs recomputation next time
        atomic_write(path, write)


def reference_stats(evaluator: Evaluator, dataset: str, images: np.ndarray, split: str = "test") -> ReferenceStats:
    """Features and Gaussian statistics of real `images` (uint8 (N,28,28)) of `dataset`/`split`.

    Loaded from the cache when a file with the same evaluator hash and data hash exists, else
    computed (a few seconds for 10,000 images) and stored.
    """
    data_sha = data_fingerprint(images)
    path = _cache_root() / f"reference-{dataset}-{split}-{evaluator.sha256[:16]}.npz"
    cached = _load_reference(path, evaluator.sha256, data_sha)
    if cached is not None:
        features, predicted = cached
    else:
        features, predicted = extract(evaluator, images)
        features = features.astype(np.float32).astype(np.float64)  # what the file will hold
        _atomic_savez(
            path,
            features=features.astype(np.float32),
            predicted=predicted,
            evaluator_sha256=np.array(evaluator.sha256),
            data_sha256=np.array(data_sha),
            cache_version=np.array(CACHE_VERSION),
        )
    mu, sigma = feature_statistics(features)
    return ReferenceStats(dataset, split, features, predicted, mu, sigma, evaluator.sha256, data_sha)


def _load_reference(path: pathlib.Path, evaluator_sha: str, data_sha: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if (
                str(z["evaluator_sha256"]) != evaluator_sha
                or str(z["data_sha256"]) != data_sha
                or int(z["cache_version"]) != CACHE_VERSION
            ):
                return None
            features, predicted = z["features"].astype(np.float64), z["predicted"].astype(np.int64)
    except (OSError, KeyError, ValueError):
        return None
    if features.ndim != 2 or len(features) != len(predicted) or len(features) < 2:
        return None
    return features, predicted


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 784) in [0, 1], the space of the memorisation distances."""
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)


def train_self_distances(
    train_images: np.ndarray, needed: np.ndarray, dataset: str, train_pixels: np.ndarray | None = None
) -> np.ndarray:
    """Distance from each training image to its nearest other training image, (N_train,) float64.

    Pixel space, images as uint8 / 255. Only entries in `needed` (indices) are guaranteed to be
    filled; the rest may be NaN. Entries are computed on demand (each costs one pass over the
    training set) and accumulated in a cache file keyed by the data hash. `train_pixels` is
    `pixels(train_images)` if the caller already has it.
    """
    data_sha = data_fingerprint(train_images)
    path = _cache_root() / f"train-nn-{dataset}-{data_sha[:16]}.npz"
    dist = None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["data_sha256"]) == data_sha and z["distances"].shape == (len(train_images),):
                dist = z["distances"].astype(np.float64)
    except (OSError, KeyError, ValueError):
        pass
    if dist is None:
        dist = np.full(len(train_images), np.nan)
    needed = np.unique(np.asarray(needed, dtype=np.int64))
    missing = needed[np.isnan(dist[needed])]
    if len(missing):
        flat = pixels(train_images) if train_pixels is None else train_pixels
        dist[missing], _ = nearest_neighbours(flat[missing], flat, skip=missing)
        _atomic_savez(path, distances=dist, data_sha256=np.array(data_sha))
    return dist
