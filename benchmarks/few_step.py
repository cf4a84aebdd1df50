"""Quality against network evaluations per image: teachers at their samplers and step counts beside distilled students.

Every entry samples N digits (N/10 of each, seed 0) in one run on one machine, timed end to end (decoding
included), counts the network evaluations per image with a hook on the network, and is scored by the project's
evaluator against the MNIST test set, with the real-data baselines at the same N.

    python benchmarks/few_step.py --n 10000 --entries ldm:dpmpp_2m:20 ldm:dpmpp_2m:5 ldm-fast:ddim:4 \
        runs/cd:consistency:1 runs/cd:consistency:2 runs/cd:consistency:4:3

An entry is MODEL:SAMPLER:STEPS[:GUIDANCE] (MODEL a packaged name or run directory; GUIDANCE default: the
model's). With --compile every model samples through torch.compile (`load(..., compile=True)`); the compile time
of each entry's batch size is spent in the untimed warm-up and reported apart. Writes
benchmarks/results/few_step.md (or --out), a JSON file and a plot of FID and label accuracy against evaluations
per image beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import baseline_row, quality_cells  # noqa: E402
from mnist_diffusion.evaluation.report import evaluate_images  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402

METRICS = ("fid", "kid", "label_accuracy", "precision_recall", "classes")


def parse_entry(text: str) -> tuple[str, str, int, float | None]:
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit():
        raise SystemExit(f"--entries {text!r}: write MODEL:SAMPLER:STEPS[:GUIDANCE], e.g. ldm:dpmpp_2m:20")
    return parts[0], parts[1], int(parts[2]), float(parts[3]) if len(parts) == 4 else None


def count_evaluations(pipe, sampler: str, steps: int, guidance: float | None, n: int = 20) -> float:
    """Network evaluations per image (rows through the network / images) of `pipe.sample` at these settings, counted
    by a hook on an eager network over `n` digits; a compiled network is not hooked, so its graph stays whole."""
    count = [0]
    hook = pipe.net.register_forward_hook(lambda m, inputs, out: count.__setitem__(0, count[0] + len(out)))
    try:
        pipe.sample(n, sampler=sampler, steps=steps, guidance=guidance, labels="0-9", seed=10**6)
    finally:
        hook.remove()
    return count[0] / n


def plot(rows: list[dict], baseline_fid: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["evaluations_per_image"])
        x = [r["evaluations_per_image"] for r in mine]
        label = f"{model} ({mine[0]['sampler']})" if len({r['sampler'] for r in mine}) == 1 else model
        left.plot(x, [r["fid"] for r in mine], "o-", label=label)
        right.plot(x, [100 * r["label_accuracy"] for r in mine], "o-", label=label)
    left.axhline(baseline_fid, color="grey", ls="--", lw=1, label="real training images")
    for ax, name in ((left, f"FID@{rows[0]['n']}"), (right, "label accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per image")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    left.set_yscale("log")
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", nargs="+", required=True, help="MODEL:SAMPLER:STEPS[:GUIDANCE]")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto: where the digits are drawn")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--compile", action="store_true", help="sample through torch.compile (load(compile=True))")
    ap.add_argument("--batch-size", type=int, default=None, help="digits per network call (default: the pipeline's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "few_step.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipes, counters, rows, baselines = {}, {}, [], None
    for entry in args.entries:
        model, sampler, steps, guidance = parse_entry(entry)
        if model not in pipes:
            pipes[model] = load(model, device=args.device, precision=args.precision, compile=args.compile)
            # counted on an eager network: a hook would split a compiled graph
            counters[model] = (load(model, device=args.device, precision=args.precision) if args.compile
                               else pipes[model])
        pipe = pipes[model]
        evaluations = count_evaluations(counters[model], sampler, steps, guidance)
        batch = args.batch_size or pipe.default_batch_size
        started = time.perf_counter()  # warm-up, not timed; under --compile it compiles this batch size
        pipe.sample(batch, sampler=sampler, steps=steps, guidance=guidance, batch_size=batch, seed=10**6)
        warmup = time.perf_counter() - started
        started = time.perf_counter()
        out = pipe.sample(args.n, sampler=sampler, steps=steps, guidance=guidance, labels="0-9", seed=0,
                          batch_size=batch)
        seconds = time.perf_counter() - started
        report = evaluate_images(out.images, out.labels, with_baselines=baselines is None, metrics=METRICS)
        baselines = baselines or report["baselines"]
        row = {"model": model, "sampler": sampler, "steps": steps, "guidance": out.settings["guidance"],
               "evaluations_per_image": evaluations, "seconds": seconds, "n": args.n,
               "batch_size": batch, "compiled": args.compile, "warmup_seconds": warmup,
               "precision": pipe.precision.precision, **report["samples"]}
        rows.append(row)
        print(f"{entry}: {evaluations:g} evaluations/image, {args.n / seconds:.1f} img/s ({seconds:.1f} s; "
              f"warm-up {warmup:.1f} s), FID@{args.n} {row['fid']:.3f}, label accuracy {row['label_accuracy']:.4f}",
              flush=True)
        write(args, pipes, rows, baselines)

    print(args.out.read_text())


def write(args, pipes, rows, baselines) -> None:
    """The table, JSON and plot of the rows so far (rewritten after every row: a stopped run keeps its rows)."""
    base = baselines["train"]
    cmd = "python benchmarks/few_step.py " + " ".join(sys.argv[1:])
    precisions = ", ".join(f"{name}: {p.precision.precision} ({p.precision.reason})" for name, p in pipes.items())
    lines = [
        "# Few-step sampling: quality against network evaluations per image",
        "",
        f"Command: `{cmd}`",
        f"Machine: {machine_info()}; digits drawn on {args.device}",
        f"Precision: {precisions}",
        f"Samples: {args.n} per row, labels cycling 0-9, seed 0; scored against the 10,000 MNIST test images in the "
        "project's evaluator's features; baselines at the same N. Time: the whole `sample` call (decoding "
        "included), after an untimed warm-up of one batch (under torch.compile: the compile, shown as warm-up). "
        f"Network: {'bf16 under torch.compile' if args.compile else 'eager'}.",
        "",
        f"| model | sampler | steps | network evaluations per image | guidance | FID@{args.n} | FID / train-vs-test | "
        "KID×1e3 | precision | recall | label accuracy | batch | images/s | seconds | warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['sampler']} | {r['steps']} | {r['evaluations_per_image']:g} | {r['guidance']:g} | "
            + " | ".join(quality_cells(r, base["fid"]))
            + f" | {r['batch_size']} | {r['n'] / r['seconds']:.1f} | {r['seconds']:.1f} | {r['warmup_seconds']:.1f} |")
    lines += [
        baseline_row("real training images (baseline)", base, base["fid"], before=4, after=4),
        "",
        "A guided teacher step runs the conditional and unconditional passes in one batch: two evaluations per image. "
        "A student takes the guidance scale as an input: one evaluation per step.",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"command": cmd, "machine": machine_info(), "rows": rows,
                                                         "baselines": baselines}, indent=1, default=float))
    plot(rows, base["fid"], args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
