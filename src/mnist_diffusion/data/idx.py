"""IDX files, the format MNIST and Fashion-MNIST are distributed in (LeCun et al., 1998).

An IDX file is a big-endian header -- two zero bytes, a type byte (0x08 = unsigned byte) and the
number of dimensions -- followed by one uint32 per dimension and then the raw values. Images are
``(N, 28, 28)`` uint8 (magic 0x00000803), labels ``(N,)`` uint8 (magic 0x00000801). Both datasets
use the same four canonical file names, optionally gzip'd.
"""

from __future__ import annotations

import gzip
import pathlib
import zlib

import numpy as np

from mnist_diffusion.errors import DataError

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 0x00000803  # ubyte, 3 dimensions
LABELS_MAGIC = 0x00000801  # ubyte, 1 dimension


def find_idx_file(directory: pathlib.Path, name: str, gz_only: bool = False) -> pathlib.Path | None:
    """`directory/name` if present, else `directory/name.gz`, else None (raw first: no inflate needed).
    With `gz_only`, only the .gz (the download cache, where that is the file whose sha256 was checked)."""
    for candidate in (directory / f"{name}.gz",) if gz_only else (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def parse_idx(data: bytes, source: str, magic: int) -> np.ndarray:
    """Decode an uncompressed IDX byte string into a uint8 array; `source` names it in errors."""
    if len(data) < 4:
        raise DataError(f"{source} is {len(data)} bytes long, too short for an IDX header.")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{source} starts with magic number 0x{found:08x} but 0x{magic:08x} was expected; "
            "it is not the IDX file its name says."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source} is {len(data)} bytes long, too short for its {header}-byte header.")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise DataError(f"{source} holds images of {dims[1]}x{dims[2]} pixels, expected 28x28.")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{source} is {len(data)} bytes long but its header {dims} implies {expected}; "
            "the file is truncated or damaged."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_file(path: pathlib.Path, magic: int) -> np.ndarray:
    """Read (and gunzip if the name ends in .gz) one IDX file."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"could not read {path} ({exc}).") from exc
    return parse_idx(data, str(path), magic)


def read_idx_split(directory: str | pathlib.Path, split: str, gz_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read one split from a directory of canonical IDX files (with `gz_only`, only their .gz forms).

    Returns uint8 images (N, 28, 28) and int64 labels (N,) in [0, 9].
    """
    directory = pathlib.Path(directory).expanduser()
    img_name, lab_name = SPLIT_FILES[split]
    img_path, lab_path = find_idx_file(directory, img_name, gz_only), find_idx_file(directory, lab_name, gz_only)
    missing = [n for n, p in ((img_name, img_path), (lab_name, lab_path)) if p is None]
    if missing:
        raise DataError(
            f"{directory} lacks {' and '.join(missing)} (optionally .gz) for the {split} split; "
            f"put the canonical IDX files there or drop --data-dir."
        )
    assert img_path is not None and lab_path is not None
    images = read_idx_file(img_path, IMAGES_MAGIC)
    labels = read_idx_file(lab_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels; "
            "they must come from the same split."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{lab_path} holds label {labels.max()}, expected labels in [0, 9].")
    return images, labels.astype(np.int64)
