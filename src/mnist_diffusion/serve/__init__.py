"""A local page to watch and steer the models: generate a digit step by step, draw part of one for the model to
finish, or a grid of digits to download. `mnist-diffusion serve` starts it; `create_app` builds it for tests.

Built on FastAPI + uvicorn (the `serve` extra) with one page of our own (`page.html`: plain HTML, CSS and
JavaScript, nothing fetched from anywhere at run time): the page needs a canvas to draw on and a stream of
frames, both a few dozen lines in a browser, while a UI framework would bring a CDN-loaded front end and many
more packages to a tool that must run offline.

API (JSON in; errors are HTTP 400 with {"error": sentence}, and the server keeps serving):
    GET  /                 the page
    GET  /api/models       [{name, kind, classes, sampler, steps, inpaint_steps, guidance, samplers}] -- what the
                           page offers (inpaint_steps: what /api/inpaint uses when steps is left out)
    POST /api/generate     {model, digit|null, guidance, sampler, steps, seed} -> NDJSON stream, one line per step
                           {"i", "steps", "t", "x_t", "x0"} (base64 of 784 uint8 pixels), then {"done", "image",
                           "seconds", "first_frame_seconds", "threads"} (threads: see `ThreadChoice`)
    POST /api/inpaint      {model, image, mask (base64, 784 bytes each; mask nonzero = known), digit|null, steps,
                           seed, method, resample} -> the same stream, the completion last
    POST /api/grid         {model, digit|null, n, guidance, sampler, steps, seed} -> image/png
"""

from __future__ import annotations

import base64
import io
import json
import queue
import threading
import time
from importlib import resources
from typing import Any

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from mnist_diffusion import assets
from mnist_diffusion.data import to_uint8
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import INPAINT_METHODS, Pipeline, load

MAX_GRID = 400
MAX_STEPS = 200


def _pixels(x) -> str:
    """A (1, 28, 28) float tensor in a value range, or a uint8 (28, 28) array -> base64 of its 784 uint8 pixels."""
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).decode()


def _decode_pixels(text: Any, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be base64 of 784 bytes (28 x 28 pixels).") from None
    if len(raw) != 784:
        raise UserError(f"{what} must hold 784 pixels (28 x 28), got {len(raw)}.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(28, 28)


class ThreadChoice:
    """How many intra-op threads one model's one-digit requests run on: all of them or one, whichever is faster.

    A digit at a time is a batch of one or two, so each of a step's hundreds of parallel loops is tiny: on a quiet
    2-core virtual machine, waking the other core for each one made the page's digits 1.4-1.8x as slow as one
    thread did (benchmarks/results/serve_latency.md against serve_latency_all_threads.md); where wake-ups are
    cheap or cores many, all threads may win. So the first requests after a model's warm-up alternate between the
    two, `TRIALS` each, and then the one with the shorter median time per frame is kept (a trial request with
    another sampler, Heun's two passes a step, can tip it; the choice lasts as long as the server).
    """

    TRIALS = 2

    def __init__(self, most: int, try_one: bool = True):
        self.options = [most, 1] if most > 1 and try_one else [most]
        self.seconds: dict[int, list[float]] = {n: [] for n in self.options}
        self.warm = False

    @property
    def decided(self) -> int | None:
        if all(len(v) >= self.TRIALS for v in self.seconds.values()):
            return min(self.options, key=lambda n: float(np.median(self.seconds[n])))
        return None

    def pick(self) -> int:
        if self.decided is not None:
            return self.decided
        return min(self.options, key=lambda n: len(self.seconds[n]))  # the one tried least, all threads first

    def record(self, threads: int, seconds_per_frame: float) -> None:
        if not self.warm:  # the first request also warms the model up: not a fair time
            self.warm = True
        elif self.decided is None:
            self.seconds[threads].append(seconds_per_frame)


class Server:
    """The models a page can use (loaded on first use) and the lock that lets one sampler run at a time."""

    def __init__(self, models: list[str], device: str = "cpu", precision: str = "auto", tune_threads: bool = True):
        self.names = list(dict.fromkeys(models))
        self.device, self.precision, self.tune_threads = device, precision, tune_threads
        self.loaded: dict[str, Pipeline] = {}
        self.threads: dict[str, ThreadChoice] = {}
        self.lock = threading.Lock()

    def model(self, name: Any) -> Pipeline:
        if name not in self.names:
            raise UserError(f"unknown model {name!r}; this server offers {', '.join(self.names)}.")
        if name not in self.loaded:
            self.loaded[name] = load(name, self.device, self.precision)
            # on a GPU the host's threads only feed it: left as they are
            self.threads[name] = ThreadChoice(torch.get_num_threads(),
                                              self.tune_threads and self.loaded[name].device.type == "cpu")
        return self.loaded[name]

    def describe(self) -> list[dict]:
        out = []
        for name in self.names:
            pipe = self.model(name)
            s = pipe.config.sample
            out.append({"name": name, "kind": "latent" if pipe.config.latent else pipe.config.diffusion.kind,
                        "classes": pipe.num_classes, "sampler": s.sampler, "steps": s.steps,
                        "inpaint_steps": pipe.inpaint_steps,
                        "guidance": s.guidance if pipe.num_classes else 1.0,
                        "samplers": _samplers(pipe)})
        return out


def _samplers(pipe: Pipeline) -> list[str]:
    """The samplers the page offers for a model: a distilled student only the one it was distilled for."""
    s = pipe.config.sample
    if s.sampler == "tutorial" or pipe.config.distill is not None:
        return [s.sampler]
    return ["dpmpp_2m", "ddim", "ddpm", "heun"]


def _settings(pipe: Pipeline, body: dict) -> dict:
    """The sampling keyword arguments a request asks for, checked: one sentence per bad value."""
    steps = body.get("steps")
    if steps is not None and (not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
        raise UserError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}.")
    guidance = body.get("guidance")
    if guidance is not None and (not isinstance(guidance, (int, float)) or not 0 <= guidance <= 20):
        raise UserError(f"guidance must be a number from 0 to 20, got {guidance!r}.")
    seed = body.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a whole number >= 0, got {seed!r}.")
    digit = body.get("digit")
    if digit is not None and (not isinstance(digit, int) or not 0 <= digit < max(pipe.num_classes, 1)):
        raise UserError(f"digit must be 0-{pipe.num_classes - 1} or empty (any digit), got {digit!r}."
                        if pipe.num_classes else "this model is unconditional; leave the digit empty.")
    return {"steps": steps, "guidance": guidance if digit is not None else None, "seed": seed,
            "sampler": body.get("sampler") or None, "labels": None if digit is None else [digit]}


def _stream(server: Server, model: str, run) -> StreamingResponse:
    """Run `run(callback)` (one digit of `model`) in a worker thread on the threads `server` picks for the model,
    and stream what the callback sees as NDJSON, one line a step."""
    frames: queue.Queue = queue.Queue()
    started = time.perf_counter()
    count = [0]

    def callback(step: dict) -> None:
        count[0] += 1
        frames.put({"i": step["i"], "steps": step["steps"], "t": float(step["t"]),
                    "attempt": step.get("attempt", 0),
                    "x_t": _pixels(to_uint8(step["x_t"][:1].float().cpu(), run.value_range)[0]),
                    "x0": _pixels(to_uint8(step["x0"][:1].float().cpu(), run.value_range)[0]),
                    "seconds": time.perf_counter() - started})

    def work() -> None:
        try:
            with server.lock:
                choice, most = server.threads[model], torch.get_num_threads()
                threads = choice.pick()
                torch.set_num_threads(threads)
                try:
                    t0 = time.perf_counter()
                    out = run(callback)
                    choice.record(threads, (time.perf_counter() - t0) / max(count[0], 1))
                finally:
                    torch.set_num_threads(most)  # a grid of many digits runs on all threads
            frames.put({"done": True, "image": _pixels(out.images[0]), "seconds": time.perf_counter() - started,
                        "threads": threads})
        except UserError as e:
            frames.put({"error": str(e)})
        except Exception as e:  # noqa: BLE001 - a failed request must not take the server down
            frames.put({"error": f"the model failed: {type(e).__name__}: {e}"})
        frames.put(None)

    threading.Thread(target=work, daemon=True).start()

    def lines():
        first = None
        while (frame := frames.get()) is not None:
            if "x_t" in frame and first is None:
                first = frame["seconds"]
            if "done" in frame:
                frame["first_frame_seconds"] = first
            yield json.dumps(frame) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class _Run:
    """A deferred sampling call: `value_range` for the frames, then called with the callback."""

    def __init__(self, value_range: str, call):
        self.value_range, self.call = value_range, call

    def __call__(self, callback):
        return self.call(callback)


def create_app(models: list[str] | None = None, device: str = "cpu", precision: str = "auto",
               tune_threads: bool = True) -> FastAPI:
    """The page's app over `models` (packaged names or run directories; default: the packaged models), sampled
    in `precision` (auto | fp32 | bf16); `tune_threads=False` keeps one-digit requests on all threads
    (`ThreadChoice`)."""
    server = Server(models or list(assets.names("model")), device, precision, tune_threads)
    app = FastAPI(title="mnist-diffusion", docs_url=None, redoc_url=None, openapi_url=None)
    page = (resources.files("mnist_diffusion") / "serve" / "page.html").read_text()

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def body_of(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise UserError("the request must be a JSON object.") from None
        if not isinstance(body, dict):
            raise UserError("the request must be a JSON object.")
        return body

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/models")
    def models_() -> list[dict]:
        return server.describe()

    @app.post("/api/generate")
    async def generate(request: Request):
        body = await body_of(request)
        pipe = server.model(body.get("model"))
        kw = _settings(pipe, body)
        pipe.settings(kw["sampler"], kw["steps"], kw["guidance"])  # refuse bad settings before streaming
        return _stream(server, body["model"], _Run(pipe.value_range, lambda cb: pipe.sample(1, callback=cb, **kw)))

    @app.post("/api/inpaint")
    async def inpaint(request: Request):
        body = await body_of(request)
        pipe = server.model(body.get("model"))
        kw = _settings(pipe, body)
        image = _decode_pixels(body.get("image"), "image")
        mask = _decode_pixels(body.get("mask"), "mask")
        resample, method = body.get("resample", 1), body.get("method", "project")
        if not isinstance(resample, int) or not 1 <= resample <= 10:
            raise UserError(f"resample must be a whole number from 1 to 10, got {resample!r}.")
        if method not in INPAINT_METHODS:
            raise UserError(f"method must be one of {', '.join(INPAINT_METHODS)}, got {method!r}.")
        if not (mask != 0).any():
            raise UserError("nothing is known yet: draw part of a digit (or load one) before asking for a completion.")
        if (mask != 0).all():
            raise UserError("nothing is left to complete: erase part of the digit first.")
        pipe.settings(kw["sampler"], kw["steps"], kw["guidance"])
        return _stream(server, body["model"], _Run(pipe.value_range, lambda cb: pipe.inpaint(
            image[None], mask[None], callback=cb, resample=resample, method=method, **kw)))

    @app.post("/api/grid")
    async def grid(request: Request):
        body = await body_of(request)
        pipe = server.model(body.get("model"))
        kw = _settings(pipe, body)
        n = body.get("n", 100)
        if not isinstance(n, int) or not 1 <= n <= MAX_GRID:
            raise UserError(f"n must be a whole number from 1 to {MAX_GRID}, got {n!r}.")
        if kw["labels"] is None and pipe.num_classes:
            kw["labels"] = "0-9"
            kw["guidance"] = body.get("guidance")
        with server.lock:
            out = pipe.sample(n, **kw)
        buffer = io.BytesIO()
        out.grid().save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    return app


def serve(models: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu",
          precision: str = "auto") -> None:
    """Serve the page until interrupted."""
    uvicorn.run(create_app(models, device, precision), host=host, port=port, log_level="warning")
