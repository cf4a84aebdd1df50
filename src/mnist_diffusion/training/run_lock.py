"""One process per run directory: a lock file holding the owner's pid, host and command.

The file is created with O_CREAT | O_EXCL, which the filesystem makes atomic, and removed when the run
ends (normally, by an error or by a signal that lets it save). A process killed outright (kill -9, a power
cut) leaves it behind: if it names a process of this host that no longer exists, the lock is stale and is
taken over with a notice; if the owner still runs, or its host is another one, the run is refused with a
sentence naming the owner and the command that clears the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from mnist_diffusion.errors import UserError

LOCK_FILE = "lock"


class RunLocked(UserError):
    """Another process is training in this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(run_dir: Path) -> Path:
    """Take the lock of `run_dir` (which must exist) for this process; returns the lock file's path."""
    path = Path(run_dir) / LOCK_FILE
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            pid, host = owner.get("pid"), owner.get("host")
            if isinstance(pid, int) and host == me["host"] and not _alive(pid):
                print(
                    f"Taking over the lock of {run_dir}: process {pid}, which held it, no longer runs.", file=sys.stderr
                )
                path.unlink(missing_ok=True)
                continue
            who = f"process {pid} on {host}" if pid else "another process"
            since = f" since {owner['started']}" if owner.get("started") else ""
            raise RunLocked(
                f"{run_dir} is in use by {who}{since}; wait for it to finish or choose another "
                f"directory (if no such process runs any more, clear the lock with: rm {path})."
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
        return path
    raise RunLocked(f"Could not take the lock {path}; another process keeps creating it.")


def release(path: Path) -> None:
    """Remove the lock if this process still owns it."""
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def locked(run_dir: Path, enabled: bool = True):
    """Hold the lock of `run_dir` within the block (only where `enabled`: rank 0 under torchrun)."""
    if not enabled:
        yield None
        return
    path = acquire(run_dir)
    try:
        yield path
    finally:
        release(path)
