"""Quality and speed of a class-conditional model, judged by the project's evaluator.

Generates N guided samples (N/10 of each digit) per setting, times them, and scores them against the MNIST
test set beside the evaluator's real-data baselines at the same N (training images; uniform noise).

    python benchmarks/shipped_model.py                                   # packaged model, 10,000 samples
    python benchmarks/shipped_model.py --model runs/x --n 1000 --guidance 1.5 2 3   # a guidance sweep
    python benchmarks/shipped_model.py --n 500 --settings ddpm:1000 dpmpp_2m:20     # sampler comparison
    python benchmarks/shipped_model.py --n 2000 --guidance 2 3 --intervals all 0.28,5.42 1,80   # guidance interval
    python benchmarks/shipped_model.py --n 200 --threads 1 --settings ddpm:1000 ddim:10 ddim:20 ddim:50 ddim:100 \
        dpmpp_2m:5 dpmpp_2m:10 dpmpp_2m:20 heun:5 heun:9 heun:18 --out benchmarks/results/sampler_sweep.md

Writes benchmarks/results/shipped_model.md (or --out) and a JSON file beside it.
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
from mnist_diffusion.cli.options import parse_interval  # noqa: E402
from mnist_diffusion.evaluation.report import baseline_labels, evaluate_images  # noqa: E402
from mnist_diffusion.pipeline import DEFAULT, load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run dir, checkpoint or packaged name (default: packaged ddpm-cond)")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--settings", nargs="+", default=["dpmpp_2m:20"], help="SAMPLER:STEPS pairs")
    ap.add_argument("--guidance", type=float, nargs="+", default=[None], help="guidance scales (default: model's)")
    ap.add_argument("--intervals", nargs="+", default=["model"],
                    help="guidance intervals LOW,HIGH in VE noise level sigma, 'all' (every step) or 'model' "
                         "(the model's setting)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default: the package's (64 on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto: where the digits are drawn")
    ap.add_argument("--guide", default=None,
                    help="autoguidance: a weaker model of the same kind guides instead of the unconditional pass")
    ap.add_argument("--labels", choices=["0-9", "data"], default="0-9",
                    help="0-9: each digit in turn (N/10 of each); data: the labels of the N training images the "
                         "baseline scores, so samples and baseline share their class mix")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "shipped_model.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = load(args.model, device=args.device)
    if args.guide:
        pipe.autoguide(load(args.guide, device=args.device))
    evaluations = [0]  # network evaluations, counted per image row (measured, not computed)
    for net in [pipe.net] + ([pipe.guide.net] if pipe.guide else []):
        net.register_forward_hook(lambda m, inputs, out: evaluations.__setitem__(0, evaluations[0] + len(out)))
    wanted = baseline_labels(args.n).tolist() if args.labels == "data" else "0-9"
    rows, raw = [], []
    baselines = None
    for setting in args.settings:
        sampler, steps = setting.split(":")
        for w, text in ((w, text) for w in args.guidance for text in args.intervals):
            interval = DEFAULT if text == "model" else parse_interval(text)
            evaluations[0] = 0
            t0 = time.perf_counter()
            out = pipe.sample(args.n, sampler=sampler, steps=int(steps), guidance=w, labels=wanted,
                              batch_size=args.batch_size, seed=0, guidance_interval=interval)
            images, labels = out.images, out.labels
            seconds = time.perf_counter() - t0
            nfe = evaluations[0] / args.n
            used = pipe.settings(guidance_interval=interval).guidance_interval
            where = "all" if used is None else f"({used[0]:g}, {used[1]:g}]"
            report = evaluate_images(images, labels, with_baselines=baselines is None,
                                     metrics=("fid", "kid", "label_accuracy", "precision_recall", "classes"))
            baselines = baselines or report["baselines"]
            s = report["samples"]
            w_used = w if w is not None else pipe.config.sample.guidance
            rows.append((sampler, int(steps), w_used, where, nfe, seconds, s))
            raw.append({"sampler": sampler, "steps": int(steps), "guidance": w_used, "interval": where,
                        "evaluations_per_image": nfe, "seconds": seconds, **s})
            print(f"{sampler} {steps} steps, guidance {w_used} in {where}: {args.n / seconds:.1f} img/s "
                  f"({seconds:.0f} s, {nfe:g} evaluations/image), "
                  f"FID@{args.n} {s['fid']:.3f}, label accuracy {s.get('label_accuracy', float('nan')):.4f}",
                  flush=True)
            write(args, pipe, rows, raw, baselines)

    print(args.out.read_text())


def write(args, pipe, rows, raw, baselines) -> None:
    """The table and JSON of the rows so far (rewritten after every row, so a stopped sweep keeps its rows)."""
    base_train, base_noise = baselines["train"], baselines["noise"]
    cmd = "python benchmarks/shipped_model.py " + " ".join(sys.argv[1:])
    lines = [
        "# Class-conditional model: quality and sampling speed",
        "",
        f"Command: `{cmd.strip()}`",
        f"Model: `{pipe.path}` ({pipe.config.recipe})"
        + (f", autoguided by `{pipe.guide.path}` (in place of the unconditional pass)" if pipe.guide else "")
        + f"; drawn on {pipe.device}; machine: {machine_info()}",
        f"Samples: {args.n}, " + (f"labels cycling 0-9 ({args.n // 10} per digit)" if args.labels == "0-9" else
                                  "labels those of the baseline's training images (the data's class mix)")
        + "; seed 0; scored against the 10,000 MNIST test images in the project's evaluator's features.",
        "",
        f"| sampler | steps | network evaluations per image | guidance | guided where sigma in | FID@{args.n} | FID / train-vs-test | KID×1e3 | precision | recall | label accuracy | images/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler, steps, w, where, nfe, seconds, s in rows:
        lines.append(
            f"| {sampler} | {steps} | {nfe:g} | {w:g} | {where} | " + " | ".join(quality_cells(s, base_train["fid"]))
            + f" | {args.n / seconds:.1f} |")
    lines += [
        baseline_row("real training images (baseline)", base_train, base_train["fid"], before=4, after=1),
        baseline_row("uniform noise (baseline)", base_noise, base_train["fid"], before=4, after=1, coarse=True),
        "",
        f"torch threads: {torch.get_num_threads()}. Guided sampling runs the conditional and unconditional passes "
        "in one batch, so each guided step costs two network evaluations per image (counted by a hook on the "
        "network); outside the guidance interval a step is one plain conditional pass.",
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": raw, "baselines": baselines}, indent=1, default=float))


if __name__ == "__main__":
    main()
