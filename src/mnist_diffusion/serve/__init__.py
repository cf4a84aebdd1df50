"""A local page to watch and steer the models: generate a digit step by step, draw part of one for the model to
finish, or a grid of digits to download. `mnist-diffusion serve` starts it; `create_app` builds it for tests.

Built on FastAPI + uvicorn (the `serve` extra) with one page of our own (`page.html`: plain HTML, CSS and
JavaScript, nothing fetched from anywhere at run time): the page needs a canvas to draw on and a stream of
frames, both a few dozen lines in a browser, while a UI framework would bring a CDN-loaded front end and many
more packages to a tool that must run offline.

API (JSON in, `Content-Type: application/json`; every error is {"error": sentence} with HTTP 400 for a bad value,
403 for a request from another site or to another host, 413 for a body past `Limits.body_bytes`, 415 for a body
that is not JSON, 503 when the server is busy or a request ran past its time budget; the server keeps serving):
    GET  /                 the page
    GET  /api/models       [{name, kind, classes, sampler, steps, inpaint_steps, guidance, samplers}] -- what the
                           page offers (inpaint_steps: what /api/inpaint uses when steps is left out)
    POST /api/generate     {model, digit|null, guidance, sampler, steps, seed} -> NDJSON stream, one line per step
                           {"i", "steps", "t", "x_t", "x0"} (base64 of 784 uint8 pixels), then {"done", "image",
                           "seconds", "first_frame_seconds", "threads"} (threads: see `ThreadChoice`), or
                           {"error": sentence} when the work fails after the stream began
    POST /api/inpaint      {model, image, mask (base64, 784 bytes each; mask nonzero = known), digit|null, steps,
                           seed, method, resample} -> the same stream, the completion last
    POST /api/grid         {model, digit|null, n, guidance, sampler, steps, seed} -> image/png

Ranges: steps 1-200, n 1-400, resample 1-10, seed 0-2**40, guidance 0-20, and at most 40,000 network
evaluations of a digit per request (digits x steps x passes a step); 60 s of model time per request; one
request samples at a time and 4 more may wait (`Limits`).

The modules: `app` (routes), `checks` (request values and `Limits`), `guard` (Host, Origin, content type and
body size), `work` (the queue that keeps sampling off the event loop), `models` (loading, `ThreadChoice`).
"""

from mnist_diffusion.serve.app import create_app, serve
from mnist_diffusion.serve.checks import MAX_SEED, Limits
from mnist_diffusion.serve.guard import is_loopback
from mnist_diffusion.serve.models import ThreadChoice

__all__ = ["MAX_SEED", "Limits", "ThreadChoice", "create_app", "is_loopback", "serve"]
