"""Sampling speed of the packaged model on CPU, one optimisation at a time, and the check that they cost no quality.

Each variant runs in its own process (OpenMP reads its environment once, at start-up), draws the same guided
digits with the model's default sampler (DPM-Solver++(2M), 20 steps, guidance 2) and reports the median
images/s over repeats. Variants, each adding one change to the one above:

1. `before`: contiguous (NCHW) weights, batches of 256, OpenMP's default (spinning) wait policy;
2. `+ OMP_WAIT_POLICY=PASSIVE`: idle OpenMP threads sleep instead of spinning (what `import mnist_diffusion` sets
   when torch is not loaded yet, so the CLI runs with it);
3. `+ channels_last`: NHWC weights and activations, so oneDNN picks its faster convolution kernels;
4. `+ batch 64`: smaller batches keep each layer's activations in cache (the package's CPU default).

Then the quality check: N digits drawn with the `before` settings and with the package's settings (same seeds),
scored by the evaluator; the two differ only by floating-point rounding, so FID and label accuracy must agree.

    python benchmarks/sampling_speed.py                      # n 256, 3 repeats, quality N 1000
    python benchmarks/sampling_speed.py --n 64 --repeats 1 --quality-n 0 --out /tmp/speed.md   # smoke

Writes benchmarks/results/sampling_speed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "before": dict(omp="", channels_last=False, batch=256),
    "+ OMP_WAIT_POLICY=PASSIVE": dict(omp="PASSIVE", channels_last=False, batch=256),
    "+ channels_last": dict(omp="PASSIVE", channels_last=True, batch=256),
    "+ batch 64 (package default)": dict(omp="PASSIVE", channels_last=True, batch=64),
}


def child(variant: str, n: int, repeats: int, model_name: str | None) -> None:
    """Time one variant in this process; print one JSON line."""
    import torch

    from mnist_diffusion.pipeline import load

    settings = VARIANTS[variant]
    pipe = load(model_name)
    fmt = torch.channels_last if settings["channels_last"] else torch.contiguous_format
    pipe.net.to(memory_format=fmt)
    pipe.sample(min(n, 32), steps=2, batch_size=settings["batch"], labels="0-9")  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe.sample(n, batch_size=settings["batch"], labels="0-9")
        rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({"variant": variant, "rates": rates, "threads": torch.get_num_threads()}))


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if VARIANTS[variant]["omp"]:
        env["OMP_WAIT_POLICY"] = VARIANTS[variant]["omp"]
    cmd = [sys.executable, __file__, "--child", variant, "--n", str(args.n), "--repeats", str(args.repeats)]
    if args.model:
        cmd += ["--model", args.model]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{variant}: {statistics.median(result['rates']):.2f} img/s "
          f"({', '.join(f'{r:.2f}' for r in result['rates'])})", flush=True)
    return result


def quality(args: argparse.Namespace) -> tuple[list[tuple[str, dict, float]], float]:
    """FID and label accuracy of the `before` and the package's settings on the same seeds, each row with the
    largest pixel difference between the two sets, and the fraction of pixels that differ."""
    import numpy as np
    import torch

    from mnist_diffusion.evaluation.report import evaluate_images
    from mnist_diffusion.pipeline import load

    pipe = load(args.model)
    rows, images = [], {}
    for name, fmt, batch in (("before", torch.contiguous_format, 256),
                             ("package default", torch.channels_last, 64)):
        pipe.net.to(memory_format=fmt)
        out = pipe.sample(args.quality_n, batch_size=batch, labels="0-9")
        images[name], labels = out.images, out.labels
        report = evaluate_images(images[name], labels, metrics=("fid", "label_accuracy"),
                                 with_baselines=name == "before")
        rows.append((name, report, 0.0))
    diff = np.abs(images["before"].astype(int) - images["package default"].astype(int))
    return [(name, report, float(diff.max())) for name, report, _ in rows], float((diff > 0).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run dir, checkpoint or packaged name (default: packaged ddpm-cond)")
    ap.add_argument("--n", type=int, default=256, help="images per timed repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quality-n", type=int, default=1000, help="images per side for the FID check (0: skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampling_speed.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.n, args.repeats, args.model)

    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_info
    from _report import write_table

    results = {v: run_variant(v, args) for v in VARIANTS}
    base = statistics.median(results["before"]["rates"])
    lines = [
        "# Sampling speed on CPU, one optimisation at a time",
        "",
        f"Command: `{' '.join(['python benchmarks/sampling_speed.py'] + sys.argv[1:])}`",
        f"Machine: {machine_info()}; load average at the end {os.getloadavg()[0]:.2f}",
        f"Model: {args.model or 'packaged ddpm-cond'}; default sampler (DPM-Solver++(2M), 20 steps, guidance 2: "
        f"40 network evaluations per image), {args.n} digits 0-9 per repeat, median of {args.repeats} repeats, "
        "each variant in a fresh process.",
        "",
        "| variant (each adds one change) | images/s | speed-up over `before` | 10,000 digits take |",
        "|---|---|---|---|",
    ]
    for v, r in results.items():
        rate = statistics.median(r["rates"])
        lines.append(f"| {v} | {rate:.2f} | {rate / base:.2f}x | {10_000 / rate / 60:.1f} min |")
    if args.quality_n:
        rows, changed = quality(args)
        train = rows[0][1]["baselines"]["train"]["fid"]
        lines += [
            "",
            f"Quality check, {args.quality_n} digits per side, same seeds (FID@{args.quality_n}; train-vs-test "
            f"baseline at that N: {train:.3f}):",
            "",
            "| settings | FID | label accuracy |",
            "|---|---|---|",
        ]
        for name, report, _ in rows:
            s = report["samples"]
            lines.append(f"| {name} | {s['fid']:.3f} | {s['label_accuracy']:.4f} |")
        lines += ["", f"Pixels that differ between the two sets: {100 * changed:.3f}%, by at most "
                      f"{rows[0][2]:.0f} of 255 (floating-point rounding in a different kernel order)."]
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
