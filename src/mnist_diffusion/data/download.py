"""Fetch the canonical gzip'd IDX files of MNIST / Fashion-MNIST from public mirrors (urllib only).

Each file is read into memory, its sha256 compared with the published value, and only then written
into ``cache_dir()/idx/<dataset>/`` through a temporary file and `os.replace`. A truncated or
altered download therefore never leaves a file behind; the next mirror is tried instead.

Mirrors are base URLs to which the file name is appended. They come from, in order of precedence,
the `mirrors` argument, the ``MNIST_DIFFUSION_MIRRORS`` environment variable (comma-separated) and
the data set's `mirrors` in `datasets.py`, where the published sha256 of each file is kept too. A ``{dataset}`` placeholder in a base URL is replaced by the dataset name, so one
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
from mnist_diffusion.data.datasets import DATASETS
from mnist_diffusion.data.idx import SPLIT_FILES
from mnist_diffusion.errors import DataError
from mnist_diffusion.files import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

MIRRORS_ENV = "MNIST_DIFFUSION_MIRRORS"
MAX_BYTES = 64 * 2**20  # the largest file is ~26 MB; a bigger answer is not the file we asked for


def mirrors_for(dataset: str, mirrors: Sequence[str] | None = None) -> list[str]:
    """Base URLs to try for `dataset`, each ending in '/', with ``{dataset}`` filled in."""
    if mirrors is None:
        env = os.environ.get(MIRRORS_ENV, "").strip()
        mirrors = [m for m in (s.strip() for s in env.split(",")) if m] if env else DATASETS[dataset].mirrors
    bases = []
    for base in mirrors:
        base = base.replace("{dataset}", dataset)
        scheme = urllib.parse.urlsplit(base).scheme
        if scheme not in ("http", "https", "file"):
            raise DataError(
                f"mirror {base!r} is not an http(s):// or file:// URL; fix {MIRRORS_ENV} or the mirrors list."
            )
        bases.append(base if base.endswith("/") else base + "/")
    return bases


def idx_dir(dataset: str) -> pathlib.Path:
    """Where downloaded IDX files of `dataset` are kept."""
    return cache_dir() / "idx" / dataset


def fetch_split(
    dataset: str,
    split: str,
    mirrors: Sequence[str] | None = None,
    hashes: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Make sure the two gzip'd IDX files of (`dataset`, `split`) are in `idx_dir`; return that directory.

    `hashes` maps file name -> sha256 and defaults to the data set's published values (`datasets.py`).
    """
    hashes = DATASETS[dataset].idx_sha256 if hashes is None else hashes
    dest = idx_dir(dataset)
    for name in SPLIT_FILES[split]:
        fetch_file(f"{name}.gz", hashes[f"{name}.gz"], mirrors_for(dataset, mirrors), dest, timeout)
    return dest


def fetch_file(
    name: str, sha256: str, mirrors: Sequence[str], dest_dir: pathlib.Path, timeout: float = 60.0
) -> pathlib.Path:
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
                raise DataError(
                    f"{name} from {url} has sha256 {actual} but {sha256} was expected "
                    f"(received {size_note}; the download is truncated or altered)"
                )
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
