"""The page: Generate's latency as a browser sees it, over HTTP on 127.0.0.1, beside busy neighbours or not."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time

from benchmarks.core import Param, case


def generate(client, body: dict) -> tuple[float, float, int, int]:
    """(seconds to the first streamed frame, to the finished digit, frames, the server's threads) of one request."""
    start, first, frames = time.perf_counter(), None, 0
    with client.stream("POST", "/api/generate", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            frame = json.loads(line)
            if "error" in frame:
                raise RuntimeError(frame["error"])
            if "x_t" in frame:
                frames += 1
                first = first if first is not None else time.perf_counter() - start
            if frame.get("done"):
                return first, time.perf_counter() - start, frames, frame["threads"]
    raise RuntimeError("the stream ended without a digit")


@case(
    "serve.latency",
    model=Param(("ddpm-cond", "ldm", "ddpm-cond-fast", "ldm-fast"), quick=("ldm-fast",)),
    repeats=Param(5, quick=1),
    steps=Param(0, help="sampler steps (0: each model's)"),
    fixed_threads=Param(False, help="all threads, not the faster of all and one (ThreadChoice)"),
    busy=Param(0, help="busy-looping neighbour processes beside the server"),
)
def latency(model, repeats, steps, fixed_threads, busy):
    """Client-side ms to the first frame and to the finished digit, median of `repeats` after a warm-up request
    and the server's thread trials, each model's default sampler settings, digit 7."""
    import httpx
    import uvicorn

    from mnist_diffusion.serve import ThreadChoice, create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(list(model), tune_threads=not fixed_threads), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for name in model:
                body = {"model": name, "digit": 7, "seed": 0, **({"steps": steps} if steps else {})}
                warm = generate(client, body)
                tried = [generate(client, {**body, "seed": 100 + i})[3] for i in range(2 * ThreadChoice.TRIALS)]
                runs = [generate(client, {**body, "seed": i + 1}) for i in range(repeats)]
                yield (
                    {"model": name},
                    {
                        "first_frame_ms": 1e3 * statistics.median(r[0] for r in runs),
                        "digit_ms": 1e3 * statistics.median(r[1] for r in runs),
                        "frames": runs[0][2],
                        "threads": statistics.mode(r[3] for r in runs),
                        "tried_threads": tried,
                        "first_request_s": warm[1],
                    },
                )
    finally:
        server.should_exit = True
        for hog in hogs:
            hog.kill()
            hog.wait()
