"""Downloads from a loopback HTTP server: good files, truncated ones, wrong hashes, mirror fallback."""

import gzip
import hashlib
import http.server
import threading
from dataclasses import replace

import numpy as np
import pytest

from mnist_diffusion.data import DATASETS, download, load_split
from mnist_diffusion.data.idx import IMAGES_MAGIC, LABELS_MAGIC
from mnist_diffusion.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_DIFFUSION_MIRRORS", raising=False)


@pytest.fixture
def server():
    """Serves `routes[path] = (body, declared_length or None)`; yields (base_url, routes)."""
    routes: dict[str, tuple[bytes, int | None]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in routes:
                self.send_error(404)
                return
            body, declared = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            self.end_headers()
            self.wfile.write(body)  # a declared length above len(body) makes this a cut-off answer
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()


def idx_gz(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BODY = idx_gz(np.arange(7, dtype=np.uint8) % 10, LABELS_MAGIC)
NAME = "t10k-labels-idx1-ubyte.gz"


def test_good_download_is_written(server, tmp_path):
    base, routes = server
    routes[f"/m/{NAME}"] = (BODY, None)
    path = download.fetch_file(NAME, sha(BODY), [f"{base}/m/"], tmp_path / "d")
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME]
    routes.clear()  # a second call finds the verified file and does not ask the server
    assert download.fetch_file(NAME, sha(BODY), [f"{base}/m/"], tmp_path / "d") == path


@pytest.mark.parametrize("declared", [None, len(BODY)], ids=["short-file", "connection-cut"])
def test_truncated_download_leaves_nothing(server, tmp_path, declared):
    base, routes = server
    routes[f"/m/{NAME}"] = (BODY[:-5], declared)
    with pytest.raises(DataError) as err:
        download.fetch_file(NAME, sha(BODY), [f"{base}/m/"], tmp_path / "d")
    msg = str(err.value)
    assert NAME in msg and sha(BODY) in msg and sha(BODY[:-5]) in msg
    if declared is not None:
        assert f"{len(BODY) - 5} of {len(BODY)} bytes" in msg
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []


def test_wrong_hash_is_refused_and_next_mirror_used(server, tmp_path):
    base, routes = server
    altered = BODY[:-1] + bytes([BODY[-1] ^ 1])
    routes[f"/bad/{NAME}"] = (altered, None)
    with pytest.raises(DataError, match=f"{NAME} from .* has sha256 {sha(altered)} but {sha(BODY)} was expected"):
        download.fetch_file(NAME, sha(BODY), [f"{base}/bad/"], tmp_path / "d")
    assert not (tmp_path / "d").exists() or list((tmp_path / "d").iterdir()) == []
    routes[f"/good/{NAME}"] = (BODY, None)
    path = download.fetch_file(NAME, sha(BODY), [f"{base}/bad/", f"{base}/missing/", f"{base}/good"], tmp_path / "d")
    assert path.read_bytes() == BODY


def test_all_mirrors_failing_lists_each(server, tmp_path):
    base, _ = server
    with pytest.raises(DataError, match=r"any of 2 mirror\(s\): .*/a/.*HTTPError.*; .*/b/"):
        download.fetch_file(NAME, sha(BODY), [f"{base}/a/", f"{base}/b/"], tmp_path / "d")


def test_mirrors_from_env_and_argument(monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_MIRRORS", "http://x/{dataset}, https://y/z/")
    assert download.mirrors_for("fashion-mnist") == ["http://x/fashion-mnist/", "https://y/z/"]
    assert download.mirrors_for("mnist", ["http://arg"]) == ["http://arg/"]
    with pytest.raises(DataError, match="ftp://q.*not an http"):
        download.mirrors_for("mnist", ["ftp://q"])
    monkeypatch.delenv("MNIST_DIFFUSION_MIRRORS")
    assert download.mirrors_for("mnist") == [m if m.endswith("/") else m + "/" for m in DATASETS["mnist"].mirrors]


def test_load_split_downloads_then_uses_the_cache(server, monkeypatch):
    base, routes = server
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6)
    files = {
        "t10k-images-idx3-ubyte.gz": idx_gz(images, IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte.gz": idx_gz(labels, LABELS_MAGIC),
    }
    for name, body in files.items():
        routes[f"/fashion-mnist/{name}"] = (body, None)
    pinned = {n: sha(b) for n, b in files.items()}  # and no system copy, which would be read before any download
    monkeypatch.setitem(
        DATASETS, "fashion-mnist", replace(DATASETS["fashion-mnist"], idx_sha256=pinned, system_dir=None)
    )
    monkeypatch.setenv("MNIST_DIFFUSION_MIRRORS", f"{base}/{{dataset}}/")
    x, y = load_split("fashion-mnist", "test")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    routes.clear()
    x2, y2 = load_split("fashion-mnist", "test", download=False)  # now from the decoded cache
    np.testing.assert_array_equal(x2, images)
    assert y2.dtype == np.int64
