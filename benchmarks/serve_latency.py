"""The page's latency, as a browser sees it: time to the first streamed frame and to the finished digit.

Starts `mnist-diffusion serve`'s app on 127.0.0.1 with uvicorn (in this process, on a free port) and, for each
packaged model, posts "Generate" requests (a digit, the model's default sampler, steps and guidance) with
httpx, timing on the client side from the request to the first x_t / x0 frame and to the final image. The
first request per model is a warm-up (it loads the model) and is reported apart; the rest give the median.

    python benchmarks/serve_latency.py --repeats 5

Writes benchmarks/results/serve_latency.md (or --out) and a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import mnist_diffusion  # noqa: F401  (before torch: it sets OpenMP's waiting, as under `mnist-diffusion serve`)

import httpx
import torch
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from mnist_diffusion import assets  # noqa: E402
from mnist_diffusion.precision import resolve_precision  # noqa: E402
from mnist_diffusion.serve import ThreadChoice, create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generate(client: httpx.Client, body: dict) -> tuple[float, float, int, int]:
    """(seconds to the first frame, seconds to the finished digit, frames, the server's threads) for one Generate
    request."""
    start = time.perf_counter()
    first, frames = None, 0
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(assets.names("model")))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: each model's)")
    ap.add_argument("--threads", type=int, default=None, help="the server's intra-op threads (default: torch's)")
    ap.add_argument("--fixed-threads", action="store_true",
                    help="one-digit requests on all threads, not the faster of all and one (ThreadChoice)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "serve_latency.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    port = free_port()
    app = create_app(args.models, tune_threads=not args.fixed_threads)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    rows = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for name in args.models:
            body = {"model": name, "digit": 7, "seed": 0, **({"steps": args.steps} if args.steps else {})}
            warm = generate(client, body)
            # the server's first requests of a model try all threads and one (ThreadChoice): not timed
            tried = [generate(client, {**body, "seed": 100 + i})[3] for i in range(2 * ThreadChoice.TRIALS)]
            runs = [generate(client, {**body, "seed": i + 1}) for i in range(args.repeats)]
            row = {"model": name, "warm_up_first": warm[0], "warm_up_total": warm[1], "frames": runs[0][2],
                   "tried_threads": tried, "threads": statistics.mode(r[3] for r in runs),
                   "first_frame": statistics.median(r[0] for r in runs),
                   "total": statistics.median(r[1] for r in runs)}
            rows.append(row)
            print(f"{name}: first frame {row['first_frame'] * 1e3:.0f} ms, digit {row['total'] * 1e3:.0f} ms "
                  f"({row['frames']} frames; first request {warm[1]:.2f} s)", flush=True)
    server.should_exit = True

    cmd = "python benchmarks/serve_latency.py " + " ".join(sys.argv[1:])
    lines = [
        "# The page: latency of Generate",
        "",
        f"Command: `{cmd.strip()}`",
        f"Machine: {machine_info()}",
        f"Numerics: the page's default, `--precision auto`: {resolve_precision('auto', 'cpu', 'sample')}.",
        f"Client-side times over HTTP on 127.0.0.1 (uvicorn + httpx), digit 7, each model's default sampler, steps "
        f"and guidance; median of {args.repeats} requests after one warm-up request per model and the "
        f"{2 * ThreadChoice.TRIALS} with which the server tries all threads and one for a model's digits "
        f"({'not here: --fixed-threads' if args.fixed_threads else 'threads: what it kept'}).",
        "",
        "| model | frames streamed | first frame (ms) | finished digit (ms) | threads "
        "| first request, incl. loading (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| `{r['model']}` | {r['frames']} | {r['first_frame'] * 1e3:.0f} | {r['total'] * 1e3:.0f} | "
              f"{r['threads']} | {r['warm_up_total']:.2f} |" for r in rows]
    lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
