"""Fetch the canonical gzip'd IDX files of MNIST / Fashion-MNIST from public mirrors (urllib only).

Each file is read into memory, its sha256 compared with the published value, and only then written
into ``cache_dir()/idx/<dataset>/`` through a temporary file and `os.replace`. A truncated or
altered download therefore never leaves a file behind; the next mirror is tried instead.

Mirrors are base URLs to which the file name is appended. They come from, in order of precedence,
the `mirrors` argument, the ``MNIST_DIFFUSION_MIRRORS`` environment variable (comma-separated) and
`DEFAULT_MIRRORS`. A ``{dataset}`` placeholder in a base URL is replaced by the dataset name, so one
setting can serve both datasets, e.g. ``https://example.org/data/{dataset}/``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

from mnist_diffusion.data.cache import cache_dir
from mnist_diffusion.data.idx import SPLIT_FILES
from mnist_diffusion.errors import DataError
from mnist_diffusion.files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

MIRRORS_ENV = "MNIST_DIFFUSION_MIRRORS"
MAX_BYTES = 64 * 2**20  # the largest file is ~26 MB; a bigger answer is not the file we asked for

DEFAULT_MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

# Published sha256 of the gzip'd files (the same bytes on every mirror listed above).
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
}


def mirrors_for(dataset: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """Base URLs to try for `dataset`, each ending in '/', with ``{dataset}`` filled in."""
    if mirrors is None:
        env = os.environ.get(MIRRORS_ENV, "").strip()
        mirrors = [m for m in (s.strip() for s in env.split(",")) if m] if env else DEFAULT_MIRRORS[dataset]
    bases = []
    for base in mirrors:
        base = base.replace("{dataset}", dataset)
        scheme = urllib.parse.urlsplit(base).scheme
        if scheme not in ("http", "https", "file"):
            raise DataError(f"mirror {base!r} is not an http(s):// or file:// URL; fix {MIRRORS_ENV} or the mirrors list.")
        bases.append(base if base.endswith("/") else base + "/")
    return bases


def idx_dir(dataset: str) -> pathlib.Path:
    """Where downloaded IDX files of `dataset` are kept."""
    return cache_dir() / "idx" / dataset


def fetch_split(dataset: str, split: str, mirrors: Sequence[str] | None = None,
                hashes: Mapping[str, str] | None = None, timeout: float = 60.0) -> pathlib.Path:
    """Make sure the two gzip'd IDX files of (`dataset`, `split`) are in `idx_dir`; return that directory.

    `hashes` maps file name -> sha256 and defaults to the published values in `SHA256`.
    """
    hashes = SHA256[dataset] if hashes is None else hashes
    dest = idx_dir(dataset)
    for name in SPLIT_FILES[split]:
        fetch_file(f"{name}.gz", hashes[f"{name}.gz"], mirrors_for(dataset, mirrors), dest, timeout)
    return dest


def fetch_file(name: str, sha256: str, mirrors: Sequence[str], dest_dir: pathlib.Path,
               timeout: float = 60.0) -> pathlib.Path:
    """Download `name` from the first mirror that serves bytes with the given sha256; return its path.

    A file already in `dest_dir` with the right hash is kept as is. Each failed mirror (network
    error, wrong size, wrong hash) is logged and the next one tried; if all fail, the DataError
    lists every mirror and why it failed.
    """
    path = pathlib.Path(dest_dir) / name
    if path.is_file() and sha256_file(path) == sha256:
        return path
    failures = []
    for base in mirrors:
        url = (base if base.endswith("/") else base + "/") + name
        try:
            data, size_note = _get(url, timeout)
            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256:
                raise DataError(f"{name} from {url} has sha256 {actual} but {sha256} was expected "
                                f"(received {size_note}; the download is truncated or altered)")
        except DataError as exc:
            failures.append(str(exc))
            log.warning("%s", exc)
            continue
        atomic_write_bytes(path, data)
        log.info("downloaded %s from %s", name, url)
        return path
    raise DataError(f"could not download {name} from any of {len(failures)} mirror(s): " + "; ".join(failures) + ".")


def _get(url: str, timeout: float) -> tuple[bytes, str]:
    """The body at `url` and a note on its size ("N bytes" or "N of M bytes").

    A connection that closes early yields what arrived: the caller's hash check then reports the
    file, the expected and the actual hash. Errors before any body arrives become DataError.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            while chunk := response.read(2**20):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_BYTES:
                    raise DataError(f"{url} sent more than {MAX_BYTES} bytes, which no IDX file of these datasets is")
    except http.client.IncompleteRead as exc:
        chunks.append(exc.partial)
        declared = str(len(b"".join(chunks)) + (exc.expected or 0))
    except DataError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(f"{url} could not be fetched ({type(exc).__name__}: {exc})") from exc
    data = b"".join(chunks)
    note = f"{len(data)} bytes" if declared in (None, str(len(data))) else f"{len(data)} of {declared} bytes"
    return data, note
