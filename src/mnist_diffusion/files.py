"""The one way this package writes a file: to a temporary file beside the target, synced, then renamed over it.

A reader (or a crash) therefore sees the old file, the new one, or none -- never half of one. Files end up
with the mode any other file the user makes would get (0644 under the usual umask): `mkstemp` creates 0600
files, and some writers (safetensors) re-create the temporary file, so the mode is set after writing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mnist_diffusion.errors import OutputError


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)`, then move the finished file onto `path`; returns `path`.

    The parent directory is created if needed. On any error (or Ctrl-C) the temporary file is removed and
    `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    return path


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_writable(path: str | os.PathLike, what: str = "output", directory: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written: `path` (a file, or with `directory` a folder,
    neither of which need exist yet) must not be of the other kind, and the nearest existing folder on its way
    must let this process create a file (tried, then removed). Raises OutputError naming the path and why."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a folder" if path.is_dir() else "a file"
        raise OutputError(
            f"Cannot write the {what} {path}: it is {kind}; give a {'folder' if directory else 'file'} path."
        )
    base = path if directory and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"Cannot write the {what} {path}: {base} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".write-check.")
    except OSError as e:
        raise OutputError(
            f"Cannot write the {what} {path}: {base} does not accept new files ({e.strerror or e})."
        ) from None
    os.close(fd)
    os.unlink(probe)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
