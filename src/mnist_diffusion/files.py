"""The one way this package writes a file: to a temporary file beside the target, synced, then renamed over it.

A reader (or a crash) therefore sees the old file, the new one, or none -- never half of one. Files end up
with the mode any other file the user makes would get (0644 under the usual umask): `mkstemp` creates 0600
files, and some writers (safetensors) re-create the temporary file, so the mode is set after writing. A write
that fails (a full disk, a folder that refuses files) is one sentence, `WriteFailed`, and the old file stays.

JSON that a file holds (a config, checkpoint metadata) is read through `parse_json`, which bounds its size and
nesting before the parser sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_diffusion.errors import OutputError, UserError

JSON_MAX_CHARS = 1_000_000  # a run config is a few kilobytes; checkpoint metadata a little more
JSON_MAX_DEPTH = 32  # a run config nests three deep


class WriteFailed(OutputError, OSError):
    """A file could not be written (full disk, no permission, a folder gone); the previous file is kept. Still an
    OSError, so callers that treat a failed optional write (a cache) as harmless go on doing so."""


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _failed(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteFailed):
            raise _failed(path, e) from None
        raise
    _sync_directory(path.parent)
    return path


def _failed(path: Path, error: OSError) -> WriteFailed:
    reason = (error.strerror or str(error) or type(error).__name__).strip().splitlines()[0].rstrip(".")
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    failed = WriteFailed(f"Cannot write {path} ({reason}); {kept}.")  # one argument: str() is the sentence
    failed.errno = error.errno
    return failed


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


def check_output(path: str | os.PathLike, what: str, suffixes: tuple[str, ...]) -> None:
    """`check_writable`, and `path` must end in one of `suffixes` ('.png', ...): both refused before any work."""
    path = Path(path)
    if path.suffix not in suffixes:
        ending = f"not {path.suffix}" if path.suffix else "and it has no extension"
        raise OutputError(f"Cannot write the {what} {path}: its name must end in {' or '.join(suffixes)}, {ending}.")
    check_writable(path, what)


def parse_json(text: str | bytes, source: str, max_chars: int = JSON_MAX_CHARS, max_depth: int = JSON_MAX_DEPTH) -> Any:
    """JSON from a file, at most `max_chars` long and `max_depth` deep, else one sentence naming `source` (a
    UserError; also for text that is not JSON). The nesting is counted before parsing, so JSON nested 100,000
    deep is refused without recursing into it."""
    if len(text) > max_chars:
        raise UserError(f"{source} holds {len(text):,} characters of JSON, more than the {max_chars:,} it may hold.")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{source} is not UTF-8 text, so it is not JSON.") from None
    if _depth(text) > max_depth:
        raise UserError(f"{source} nests its JSON more than {max_depth} deep; no file this tool writes does.")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{source} is not valid JSON ({e}).") from None


_TOKEN = re.compile(r'\\.|["\[\]{}]')  # an escape (skipped whole), a quote or a bracket


def _depth(text: str) -> int:
    """How deep the brackets of JSON `text` nest, those inside strings left out; one pass, linear time."""
    depth = deepest = 0
    in_string = False
    for token in _TOKEN.findall(text):
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
