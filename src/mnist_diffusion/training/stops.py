"""Stopping a run cleanly: SIGINT (Ctrl-C, a notebook's interrupt) and SIGTERM (`timeout`, `docker stop`, a
scheduler's pre-emption) only set a flag; the training loop sees it at the next step boundary, saves a whole
step and leaves. A second signal of either kind stops at once without saving (the last checkpoint stays
intact: every checkpoint is written atomically).

Under torchrun each rank sets its own flag and the ranks agree on it once per step (`distributed.agree`), so
all of them stop after the same step.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested: int | None = None  # the signal number that asked for a stop, if any


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop: unwinds like Ctrl-C (locks released, a failed start cleaned up)."""


def raise_terminated(signum, frame) -> None:
    """A SIGTERM handler for whole commands: raise `Terminated` (the training loop installs its own)."""
    raise Terminated


def requested() -> int | None:
    """The signal number (2 = SIGINT, 15 = SIGTERM) that asked this process to stop, or None."""
    return _requested


def request(signum: int = signal.SIGINT) -> None:
    """Ask for a stop at the next step boundary, as a signal would (tests, and code driving a Trainer)."""
    global _requested
    if _requested is None:
        _requested = int(signum)


def exit_code(signum: int) -> int:
    """The shell's convention for a process ended by signal `signum`: 128 + signum (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum)


@contextlib.contextmanager
def stop_at_step_boundaries(announce: bool = True):
    """Within the block, SIGINT and SIGTERM request a stop instead of interrupting; the previous handlers are
    restored after it. Outside the main thread (where Python cannot install handlers) the block changes nothing.
    """
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        if _requested is not None:  # a second signal: stop now, without saving
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        request(signum)
        if announce:
            print(
                f"\nGot {signal.Signals(signum).name}: stopping after this step and saving "
                "(send it again to stop at once; the last checkpoint is kept).",
                file=sys.stderr,
            )

    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
