"""Sampling the packaged models in fp32, bf16 and bf16 under torch.compile: images/s, compile time, and whether
the compiled network draws the same digits.

Speed: each model at its defaults (DPM-Solver++ 20 steps, guidance 2) through `Pipeline.sample`, the variants
loaded side by side and timed in turn (median of --repeats; interleaving keeps a busy neighbour from favouring
one), after a warm-up of the same size that pays the compile. --batch-sizes MODEL:BATCH adds rows at other batch
sizes.
Quality (--n > 0): --n digits (labels 0-9 in turn) per variant on seeds 0..n-1, plus fp32 on seeds n..2n-1 (how
far FID moves between two fp32 draws); FID and label accuracy from the packaged evaluator, and the share of
pixels that differ from fp32's.

    python benchmarks/compiled_sampling.py --n 0 --batch-sizes ldm:64     # speed only
    python benchmarks/compiled_sampling.py --no-speed --n 2000 --out benchmarks/results/compiled_quality.md
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import mnist_diffusion  # noqa: E402, F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from mnist_diffusion.files import atomic_write_text  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402
from mnist_diffusion.precision import resolve_precision  # noqa: E402
from precision import quality  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16 compiled": ("bf16", True)}
MODELS = ("ddpm-cond", "ldm")


def log(text: str) -> None:
    print(text, flush=True)


def speed(model: str, batch_size: int | None, args) -> dict:
    """Images/s of each variant, interleaved, median of --repeats; the warm-up's seconds (compile included)."""
    pipes, warm = {}, {}
    for name, (precision, compile) in VARIANTS.items():
        pipes[name] = load(model, precision=precision, compile=compile)
        t0 = time.perf_counter()
        pipes[name].sample(args.sample_n, batch_size=batch_size)  # every batch shape the timed calls use
        warm[name] = time.perf_counter() - t0
    rates = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, pipe in pipes.items():
            t0 = time.perf_counter()
            pipe.sample(args.sample_n, seed=1, batch_size=batch_size)
            rates[name].append(args.sample_n / (time.perf_counter() - t0))
    return {name: {"ips": statistics.median(rates[name]), "warm_s": warm[name],
                   "batch": batch_size or pipes[name].default_batch_size} for name in VARIANTS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sample-n", type=int, default=256, help="digits per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", nargs="*", default=[], metavar="MODEL:BATCH",
                    help="rows at other batch sizes too, e.g. ldm:64")
    ap.add_argument("--n", type=int, default=2000, help="digits per variant for the quality check (0: none)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compiled_sampling.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows, checks = [], {}
    for model in args.models:
        extra = [int(b) for m, _, b in (e.partition(":") for e in args.batch_sizes) if m == model]
        for batch_size in ([] if args.no_speed else [None, *extra]):
            r = speed(model, batch_size, args)
            rows.append((model, batch_size, r))
            log(f"{model} batch {batch_size or 'default'}: " + ", ".join(
                f"{k} {v['ips']:.1f} img/s (warm-up {v['warm_s']:.1f} s)" for k, v in r.items()))
        if args.n:
            checks[model] = quality(model, args.n, {**{k: (*v, 0) for k, v in VARIANTS.items()},
                                                    "fp32, other seeds": ("fp32", False, None)})
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["# Sampling in fp32, bf16 and bf16 under torch.compile", "",
             f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip()
             + f" ({(time.perf_counter() - started) / 60:.1f} min)", "",
             f"Machine: {machine_info()}; torch threads {torch.get_num_threads()}; 1-minute load average at the end "
             f"{load_avg:.1f}", ""]
    if rows:
        lines += [f"## Speed: {args.sample_n} digits per call at the model's defaults, median of {args.repeats}, "
                  "variants interleaved", "",
                  "Warm-up: the first call of the same size, which for the compiled network includes compiling "
                  "(inductor's on-disk cache makes a second process faster). Batch: each variant's own default "
                  "where the row says so (`Pipeline.default_batch_size`).", "",
                  "| model | batch | fp32 images/s | bf16 images/s | bf16 compiled images/s | bf16 / fp32 | "
                  "compiled / fp32 | compiled warm-up |", "|---|---|---|---|---|---|---|---|"]
        for model, batch_size, r in rows:
            a, b, c = (r[k]["ips"] for k in VARIANTS)
            batch = " / ".join(dict.fromkeys(str(v["batch"]) for v in r.values())) + ("" if batch_size else " (defaults)")
            lines.append(f"| {model} | {batch} | {a:.1f} | {b:.1f} | {c:.1f} | {b / a:.2f}x | "
                         f"{c / a:.2f}x | {r['bf16 compiled']['warm_s']:.1f} s |")
        auto = resolve_precision("auto", "cpu", "sample")
        lines += ["", f"`--precision auto` here: {auto.precision} ({auto.reason}).", ""]
    if checks:
        lines += [f"## Quality: {args.n} digits per variant (labels 0-9 in turn), seeds 0..{args.n - 1}", "",
                  "| model | variant | FID | label accuracy | pixels differing from fp32 | by > 32/255 |",
                  "|---|---|---|---|---|---|"]
        for model, c in checks.items():
            for key, v in c.items():
                moved = (f"{v['differ']['any']:.1%} | {v['differ']['over32']:.2%}" if "differ" in v
                         else "(other seeds) | ")
                lines.append(f"| {model} | {key} | {v['fid']:.3f} | {v['acc']:.2%} | {moved} |")
        lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
