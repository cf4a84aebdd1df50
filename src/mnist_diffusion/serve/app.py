"""The page's routes (`create_app`) and `serve`: requests are checked on the event loop (models load in worker
threads), model work goes to the `WorkQueue`, and frames come back to the event loop to be streamed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from mnist_diffusion import assets
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.data import to_uint8
from mnist_diffusion.diffusion import samplers
from mnist_diffusion.errors import UserError
from mnist_diffusion.export import page
from mnist_diffusion.pipeline import INPAINT_METHODS, Pipeline
from mnist_diffusion.serve import checks
from mnist_diffusion.serve.checks import Limits
from mnist_diffusion.serve.guard import Hosts, RequestGuard
from mnist_diffusion.serve.models import Models
from mnist_diffusion.serve.work import Job, Stopped, WorkQueue

log = logging.getLogger(__name__)


def _pixels(x) -> str:
    """A uint8 (28, 28) array -> base64 of its 784 pixels."""
    return base64.b64encode(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).decode()


def _sentence(error: BaseException) -> str:
    """What the page shows for a request's failure: a refusal's own sentence, else one naming the failure."""
    if isinstance(error, UserError):
        return str(error)
    log.error("a request failed", exc_info=error)
    return f"the model failed ({type(error).__name__}: {checks.cut(str(error), 200)})."


def _evaluations(pipe: Pipeline, settings: SampleConfig, guided: bool = True) -> int:
    """Network evaluations of one digit at `settings`: classifier-free guidance doubles the batch."""
    doubled = guided and pipe.num_classes and not pipe.config.model.guidance_input and settings.guidance != 1
    return samplers.get(settings.sampler).evaluations(settings.steps) * (2 if doubled else 1)


def digit_for_seed(seed: int, classes: int) -> int:
    """The digit "any digit" draws for `seed`: random over the classes, the same for the same seed (so a seed
    names one picture, as it does with a chosen digit)."""
    return random.Random(seed).randrange(classes)


def _noise_share(pipe: Pipeline) -> Callable[[float], float | None]:
    """t -> how much of x_t is noise, from 0 (the clean digit) to 1 (pure noise): sqrt(1 - alpha_bar_t) on
    DDPM's schedule, the weight t of the noise on flow matching's straight path; None where the process has
    neither."""
    schedule = getattr(pipe.process, "schedule", None)
    if hasattr(schedule, "alpha_sigma"):
        return lambda t: float(schedule.alpha_sigma(t)[1])
    if hasattr(schedule, "alpha_bar"):
        return lambda t: math.sqrt(max(0.0, 1.0 - float(schedule.alpha_bar(torch.tensor(float(t))))))
    return lambda t: None


def _page_headers(script: bytes) -> dict[str, str]:
    """A policy that lets the page run its own script (page.js, by its hash, which its tag's integrity pins too)
    and nothing else: no inline script or handlers, nothing fetched from another site, not framed by one."""
    policy = (
        f"default-src 'none'; script-src '{page.digest(script)}'; style-src 'unsafe-inline'; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {"content-security-policy": policy, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


class _JobStream(StreamingResponse):
    """An NDJSON stream whose job is cancelled however the response ends (a client that has gone included)."""

    def __init__(self, job: Job, lines: AsyncIterator[str]):
        super().__init__(lines, media_type="application/x-ndjson")
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def _stream(work: WorkQueue, models: Models, name: str, pipe: Pipeline, call: Callable, extra: dict) -> _JobStream:
    """Queue `call(callback)` (one digit of model `name`, loaded as `pipe`) on the threads `models` picks for it,
    and stream what the callback sees as NDJSON, one line a step (with `extra` in each: what the server chose),
    then the finished digit or an error."""
    value_range, noise = pipe.value_range, _noise_share(pipe)
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue = asyncio.Queue()
    started = time.perf_counter()

    def post(item) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop has closed: the server is stopping
            loop.call_soon_threadsafe(frames.put_nowait, item)

    def run(job: Job) -> dict:
        count = 0

        def callback(step: dict) -> None:
            nonlocal count
            job.check()
            count += 1
            post(
                {
                    "i": step["i"],
                    "steps": step["steps"],
                    "t": float(step["t"]),
                    "noise": noise(step["t"]),
                    "attempt": step.get("attempt", 0),
                    "x_t": _pixels(to_uint8(step["x_t"][:1].float().cpu(), value_range)[0]),
                    "x0": _pixels(to_uint8(step["x0"][:1].float().cpu(), value_range)[0]),
                    "seconds": time.perf_counter() - started,
                    **extra,
                }
            )

        choice = models.threads[name]
        threads = choice.pick()
        torch.set_num_threads(threads)
        try:
            t0 = time.perf_counter()
            out = call(callback)
            choice.record(threads, (time.perf_counter() - t0) / max(count, 1))
        finally:
            torch.set_num_threads(models.most_threads)  # a grid of many digits runs on all threads
        return {"done": True, "image": _pixels(out.images[0]), "threads": threads, **extra}

    job = work.submit(run)
    job.future.add_done_callback(lambda _: post(None))
    return _JobStream(job, _lines(job, frames, started))


async def _lines(job: Job, frames: asyncio.Queue, started: float) -> AsyncIterator[str]:
    first = None
    while (frame := await frames.get()) is not None:
        first = frame["seconds"] if first is None else first
        yield json.dumps(frame) + "\n"
    if job.future.cancelled():
        return
    if (error := job.future.exception()) is not None:
        yield json.dumps({"error": _sentence(error)}) + "\n"
    else:
        yield (
            json.dumps({**job.future.result(), "seconds": time.perf_counter() - started, "first_frame_seconds": first})
            + "\n"
        )


@contextlib.contextmanager
def _checked_before_each_pass(pipe: Pipeline, job: Job):
    """`job.check()` before every network pass of `pipe`: what stops a grid whose client has gone or whose time
    is up. Not a step callback: for one, a latent model's pipeline decodes the whole batch at every step, which
    costs a grid more than its sampling (the page's digits want those frames; a grid does not)."""
    handle = pipe.net.register_forward_pre_hook(lambda _module, _args: job.check())
    try:
        yield
    finally:
        handle.remove()


async def _outcome(job: Job, request: Request):
    """A job's result once it is done; the job is cancelled if its client goes first."""
    done = asyncio.wrap_future(job.future)
    try:
        while not (await asyncio.wait({done}, timeout=0.25))[0]:
            if await request.is_disconnected():
                raise Stopped
        return done.result()
    finally:
        job.cancel()
        done.cancel()  # an outcome nobody reads is not reported as "never retrieved"


def create_app(
    models: list[str] | None = None,
    device: str = "cpu",
    precision: str = "auto",
    tune_threads: bool = True,
    limits: Limits | None = None,
    host: str | None = None,
) -> FastAPI:
    """The page's app over `models` (packaged names or run directories; default: the packaged models), sampled
    in `precision` (auto | fp32 | bf16); `tune_threads=False` keeps one-digit requests on all threads
    (`ThreadChoice`); `limits` bounds each request (`Limits`); `host`: the address it listens on, which requests
    may name besides 127.0.0.1, localhost and [::1]."""
    limits = limits or Limits()
    pipes = Models(models or list(assets.names("model")), device, precision, tune_threads)
    work = WorkQueue(limits.waiting, limits.seconds)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        work.close()

    app = FastAPI(title="mnist-diffusion", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.models, app.state.work, app.state.limits = pipes, work, limits
    app.add_middleware(RequestGuard, hosts=Hosts(host), limit=limits.body_bytes)
    script = page.read("page.js")  # the one front end; the static edition's engine is not served here
    html = page.with_scripts({"page.js": script})
    page_headers = _page_headers(script)

    @app.exception_handler(UserError)
    async def refused(request: Request, exc: UserError):
        status = getattr(exc, "status", 400)
        return JSONResponse({"error": str(exc)}, status, headers={"retry-after": "2"} if status == 503 else None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # 404, 405: a sentence like every other error
        return JSONResponse(
            {"error": f"{request.method} {checks.cut(request.url.path, 60)}: {str(exc.detail).lower()}."},
            exc.status_code,
        )

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception):
        return JSONResponse({"error": f"the server failed ({type(exc).__name__}); its log says more."}, 500)

    async def body_of(request: Request) -> dict:
        return checks.json_object(await request.body())

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(html, headers=page_headers)

    @app.get("/page.js")
    def page_script() -> Response:
        return Response(script, media_type="text/javascript", headers=page_headers)

    @app.get("/api/models")
    def models_() -> list[dict]:
        return pipes.describe()

    def check_work(pipe: Pipeline, kw: dict, digits: int, guided: bool = True, resample: int = 1) -> None:
        """Refuse bad settings, and work past `limits.evaluations`, before anything is queued."""
        settings = pipe.settings(kw["sampler"], kw["steps"], kw["guidance"])
        checks.check_work(digits, _evaluations(pipe, settings, guided) * resample, limits)

    def generate_call(body: dict):
        pipe = pipes.get(body.get("model"))
        kw = checks.settings(pipe.num_classes, body, limits)
        chosen = {}
        if kw["labels"] is None and pipe.num_classes:  # "any digit": one the seed picks, guided as a chosen one
            digit = digit_for_seed(kw["seed"], pipe.num_classes)
            kw["labels"], kw["guidance"], chosen = [digit], body.get("guidance"), {"digit": digit}
        check_work(pipe, kw, 1)
        return pipe, chosen, lambda cb: pipe.sample(1, callback=cb, **kw)

    def inpaint_call(body: dict):
        pipe = pipes.get(body.get("model"))
        kw = checks.settings(pipe.num_classes, body, limits)
        image = checks.decode_pixels(body.get("image"), "image")
        mask = checks.decode_pixels(body.get("mask"), "mask")
        resample = checks.count(body, "resample", 1, limits.resample)
        method = body.get("method", "project")
        if method not in INPAINT_METHODS:
            raise UserError(f"method must be one of {', '.join(INPAINT_METHODS)}, got {checks.shown(method)}.")
        if not (mask != 0).any():
            raise UserError("nothing is known yet: draw part of a digit (or load one) before asking for a completion.")
        if (mask != 0).all():
            raise UserError("nothing is left to complete: erase part of the digit first.")
        steps = {**kw, "steps": kw["steps"] or pipe.inpaint_steps}
        check_work(pipe, steps, 1, kw["labels"] is not None, resample)
        return (
            pipe,
            {},
            lambda cb: pipe.inpaint(image[None], mask[None], callback=cb, resample=resample, method=method, **kw),
        )

    def grid_call(body: dict):
        pipe = pipes.get(body.get("model"))
        kw = checks.settings(pipe.num_classes, body, limits)
        n = checks.count(body, "n", 100, limits.n)
        if kw["labels"] is None and pipe.num_classes:
            kw["labels"], kw["guidance"] = "0-9", body.get("guidance")
        check_work(pipe, kw, n)

        def run(job: Job) -> bytes:
            with _checked_before_each_pass(pipe, job):
                out = pipe.sample(n, **kw)
            buffer = io.BytesIO()
            out.labelled_grid().save(buffer, format="PNG")  # each column's digit above it, the settings below
            return buffer.getvalue()

        return run

    @app.post("/api/generate")
    async def generate(request: Request):
        body = await body_of(request)
        pipe, extra, call = await run_in_threadpool(generate_call, body)
        return _stream(work, pipes, body["model"], pipe, call, extra)

    @app.post("/api/inpaint")
    async def inpaint(request: Request):
        body = await body_of(request)
        pipe, extra, call = await run_in_threadpool(inpaint_call, body)
        return _stream(work, pipes, body["model"], pipe, call, extra)

    @app.post("/api/grid")
    async def grid(request: Request):
        body = await body_of(request)
        run = await run_in_threadpool(grid_call, body)
        return Response(await _outcome(work.submit(run), request), media_type="image/png")

    return app


def serve(
    models: list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    precision: str = "auto",
    limits: Limits | None = None,
) -> None:
    """Serve the page until interrupted."""
    uvicorn.run(
        create_app(models, device, precision, limits=limits, host=host), host=host, port=port, log_level="warning"
    )
