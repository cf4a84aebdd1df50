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


@case(
    "serve.static",
    model=Param(("ddpm-cond-fast", "ddpm-cond"), quick=("ddpm-cond-fast",)),
    repeats=Param(5, quick=2),
)
def static_page(model, repeats):
    """The static edition (`export-web`) in headless Chromium (Debian's, one WebAssembly thread): ms from opening
    the page to the first finished digit (a fresh browser context each time: the WebAssembly and the model load
    and compile again), ms per digit at the model's defaults alone and in a batch of 64, ms per network pass at
    batch 1 and 64, and the MB the page loads for the model; medians of `repeats`."""
    import tempfile
    import urllib.request
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from mnist_diffusion.export import web
    from mnist_diffusion.pipeline import load

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from chromium import ARGS, CHROMIUM, VIEW

    cache = Path(__file__).resolve().parents[1] / "build" / "npm-cache"
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        site = web.build_site([(name, load(name, precision="fp32")) for name in model], Path(tmp) / "site", cache)
        shared = sum(p.stat().st_size for p in site["out"].rglob("*") if p.is_file() and p.parent.name != "models")
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site["out"])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/"
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                for entry in site["models"]:
                    name = entry["name"]
                    first = []
                    for _ in range(repeats):
                        context = browser.new_context(viewport=VIEW)
                        page = context.new_page()
                        start = time.perf_counter()
                        page.goto(url)
                        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
                        page.select_option("#model", name)
                        page.evaluate("document.body.dataset.state = 'waiting'")
                        page.click("#generate")
                        page.wait_for_selector("body[data-state=done]", timeout=120_000)
                        first.append(time.perf_counter() - start)
                        context.close()
                    page = browser.new_page(viewport=VIEW)
                    page.goto(url)
                    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
                    measured = page.evaluate(
                        """async ([name, repeats]) => {
                            const e = window.mnistDiffusionEngine, m = (await e.models()).find((m) => m.name === name);
                            const body = { model: name, digit: 7, guidance: m.guidance, seed: 0 };
                            await e.generate(body, () => {});
                            const one = [];
                            for (let r = 0; r < repeats; r++) one.push((await e.generate({ ...body, seed: r + 1 }, () => {})).seconds);
                            const batch = [];
                            for (let r = 0; r < repeats; r++) {
                              const t0 = performance.now();
                              await e.digits(m, { ...body, digit: null, n: 64, seed: r });
                              batch.push((performance.now() - t0) / 1000);
                            }
                            const median = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
                            return { one: median(one), batch: median(batch), pass1: await e.bench(name, 1, repeats),
                                     pass64: await e.bench(name, 64, repeats) };
                        }""",
                        [name, repeats],
                    )
                    page.close()
                    model_bytes = (site["out"] / entry["file"]).stat().st_size
                    yield (
                        {"model": name},
                        {
                            "first_digit_ms": 1e3 * statistics.median(first),
                            "digit_ms": 1e3 * measured["one"],
                            "digit_ms_batch64": 1e3 * measured["batch"] / 64,
                            "pass_ms_batch1": measured["pass1"],
                            "pass_ms_batch64": measured["pass64"],
                            "page_mb": (shared + model_bytes) / 1e6,
                            "steps": entry["steps"],
                            "browser": browser.version,
                        },
                    )
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
