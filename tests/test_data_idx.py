"""IDX parsing for MNIST and Fashion-MNIST layouts, from synthetic files written here."""

import gzip

import numpy as np
import pytest

from mnist_diffusion.data import load_split
from mnist_diffusion.data.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx_split
from mnist_diffusion.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path / "cache"))


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_split(directory, split, n, seed, gz):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    for stem, data in (
        (f"{prefix}-images-idx3-ubyte", idx_bytes(images, IMAGES_MAGIC)),
        (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, LABELS_MAGIC)),
    ):
        (directory / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [False, True])
def test_load_split_reads_idx_files(tmp_path, dataset, gz):
    train = write_split(tmp_path, "train", 60, seed=1, gz=gz)
    test = write_split(tmp_path, "test", 20, seed=2, gz=gz)
    for split, (want_x, want_y) in (("train", train), ("test", test)):
        x, y = load_split(dataset, split, data_dir=str(tmp_path))
        assert x.dtype == np.uint8 and x.shape == (len(want_y), 28, 28)
        assert y.dtype == np.int64 and y.shape == (len(want_y),)
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)


def test_missing_files_name_the_directory_and_files(tmp_path):
    write_split(tmp_path, "train", 5, seed=0, gz=True)
    with pytest.raises(DataError, match=r"lacks t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"):
        load_split("mnist", "test", data_dir=str(tmp_path))


def test_wrong_magic_is_named(tmp_path):
    write_split(tmp_path, "train", 5, seed=0, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").rename(tmp_path / "tmp")
    (tmp_path / "train-images-idx3-ubyte").rename(tmp_path / "train-labels-idx1-ubyte")
    (tmp_path / "tmp").rename(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte starts with magic number 0x00000801 but 0x00000803"):
        read_idx_split(tmp_path, "train")


def test_truncated_and_odd_sized_files_are_refused():
    good = idx_bytes(np.zeros((3, 28, 28), np.uint8), IMAGES_MAGIC)
    with pytest.raises(DataError, match=r"f\.idx is .* bytes long but its header \(3, 28, 28\) implies 2368"):
        parse_idx(good[:-1], "f.idx", IMAGES_MAGIC)
    with pytest.raises(DataError, match="too short"):
        parse_idx(good[:10], "f.idx", IMAGES_MAGIC)
    with pytest.raises(DataError, match="32x32 pixels, expected 28x28"):
        parse_idx(idx_bytes(np.zeros((1, 32, 32), np.uint8), IMAGES_MAGIC), "f.idx", IMAGES_MAGIC)


def test_count_mismatch_and_bad_labels_are_refused(tmp_path):
    write_split(tmp_path, "test", 4, seed=0, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8), LABELS_MAGIC))
    with pytest.raises(DataError, match="holds 4 images but .* holds 3 labels"):
        read_idx_split(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(4, 10, np.uint8), LABELS_MAGIC))
    with pytest.raises(DataError, match=r"holds label 10, expected labels in \[0, 9\]"):
        read_idx_split(tmp_path, "test")


def test_corrupt_gzip_is_named(tmp_path):
    write_split(tmp_path, "test", 4, seed=0, gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(DataError, match=r"could not read .*t10k-images-idx3-ubyte\.gz"):
        read_idx_split(tmp_path, "test")
