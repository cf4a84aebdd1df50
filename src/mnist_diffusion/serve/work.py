"""Model work off the event loop: one worker thread runs one request's sampling at a time, a few more requests
wait their turn, and the rest are told at once that the server is busy.

One at a time for all models together: torch's intra-op threads are one pool for the whole process, so two
requests sampling at once would only share the cores (and `ThreadChoice` sizes that pool per request). A job
stops between sampler steps when its client has gone (`Job.cancel`) or its time budget is spent: the sampler's
callback calls `Job.check`, which raises.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from mnist_diffusion.serve.checks import Refused


class Stopped(Refused):
    """Raised in a sampler's callback to end the work of a client that has gone."""

    def __init__(self):
        super().__init__("the client has gone.", 503)


class Job:
    """One request's model work: `run(job)` in the worker, its outcome in `future`."""

    def __init__(self, run: Callable[[Job], Any], seconds: float):
        self.run, self.seconds = run, seconds
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.started: float | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """The client has gone: a waiting job never starts, a running one stops at its next step."""
        self._cancelled.set()
        self.future.cancel()  # succeeds only while the job waits

    def check(self) -> None:
        """Raise if the job should stop now (called between sampler steps)."""
        if self._cancelled.is_set():
            raise Stopped
        if self.started is not None and time.monotonic() - self.started > self.seconds:
            raise Refused(
                f"the request ran past the server's time budget of {self.seconds:g} s; ask for fewer digits or steps.",
                503,
            )


class WorkQueue:
    """Runs jobs one at a time in a worker thread; refuses a job while `waiting` others wait beside a running
    one. `active`: jobs waiting or running; `running`: the job at work, if any."""

    def __init__(self, waiting: int, seconds: float):
        self.waiting, self.seconds = waiting, seconds
        self.active = 0
        self.running: Job | None = None
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, run: Callable[[Job], Any]) -> Job:
        """Queue `run(job)`; raises `Refused` (503) when the queue is full."""
        job = Job(run, self.seconds)
        with self._lock:
            if self.active > self.waiting:
                raise Refused("the server is busy with other requests; try again in a moment.", 503)
            self.active += 1
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="mnist-diffusion-model", daemon=True)
                self._worker.start()
        job.future.add_done_callback(self._finished)
        self._jobs.put(job)
        return job

    def close(self) -> None:
        """Let the worker end once the jobs before this call are done."""
        self._jobs.put(None)

    def _finished(self, _future) -> None:
        with self._lock:
            self.active -= 1

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            job.started, self.running = time.monotonic(), job
            try:
                result = job.run(job)
            except Exception as e:
                self.running = None
                job.future.set_exception(e)
            else:
                self.running = None
                job.future.set_result(result)
