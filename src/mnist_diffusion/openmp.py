"""How idle OpenMP threads wait for the next parallel loop; imported by the package before torch loads."""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping

SPIN_COUNT = "3000"  # libgomp spins this often before it sleeps: a short spin, far under its default
VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_waiting(environ: dict[str, str], runnable: list[int] | None) -> dict[str, str]:
    """The OpenMP settings to add to `environ` so that idle threads spin briefly, then sleep, and spin only on a
    quiet machine. `runnable`: a few readings of how many threads the machine has runnable (this one included,
    /proc/loadavg's 4th field), None if unknown.

    Spinning long (libgomp's default) steals the cores busy threads need on a shared machine; sleeping at once
    (OMP_WAIT_POLICY=PASSIVE) costs a wake-up at every parallel loop, which small maps (ldm, one digit on the
    page) feel. So a short spin pays on a quiet machine and costs beside a busy process (docs/performance.md,
    docs/results.md); a thread team waits for its slowest thread, so one busy neighbour is enough on any number
    of cores. Anything the user exported wins.
    """
    if "OMP_WAIT_POLICY" in environ:
        return {}
    added = {"OMP_WAIT_POLICY": "PASSIVE"}  # LLVM's OpenMP, and libgomp without a spin count: sleep at once
    if runnable and max(runnable) <= 1 and "GOMP_SPINCOUNT" not in environ:
        added["GOMP_SPINCOUNT"] = SPIN_COUNT
    return added


def runnable_threads(readings: int = 5, gap_s: float = 0.001) -> list[int] | None:
    """`readings` counts of the machine's runnable threads, `gap_s` apart (Linux; None elsewhere)."""
    try:
        counts = []
        for i in range(readings):
            if i:
                time.sleep(gap_s)
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        return counts
    except (OSError, ValueError, IndexError):
        return None


def set_waiting(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Add `openmp_waiting`'s settings to `environ` (the process's own by default); returns what was added."""
    added = openmp_waiting(dict(environ), runnable_threads())
    environ.update(added)
    return added


def waiting() -> dict[str, str]:
    """The OpenMP waiting variables this process runs with (what a run's metrics record beside its speed)."""
    return {k: os.environ[k] for k in VARIABLES if k in os.environ}
