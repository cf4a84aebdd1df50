"""Digit completion: label accuracy and FID of inpainted halves, beside the half digits and the real ones.

On the first N MNIST test digits with one half known (top, then left), each packaged model completes the other
half with each method (`Pipeline.inpaint`: x0 projection or replacement, with and without RePaint resampling),
without being told the digit. The project's evaluator then classifies the completions: label accuracy against
the true labels says whether the completion is the digit the known half came from. Baselines in the same run:
the half digits with the rest black, and the real full digits. FID of every set is against the test set's
statistics (all sets share the known halves, so compare FIDs within the table only). Also: completions when the
true label is given (guided, the model's default guidance), and images/s. Every row takes `Pipeline.inpaint`'s
default steps (`inpaint_steps`: the model's sampling steps, at least 20), and a sweep over steps (top half known,
x0 projection, no label; --sweep MODEL:STEPS ...) shows what that default is worth.

    python benchmarks/inpainting.py --n 1000

Writes benchmarks/results/inpainting.md (or --out) and a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import mnist_diffusion  # noqa: E402
from _machine import machine_info  # noqa: E402
from mnist_diffusion.data import load_split  # noqa: E402
from mnist_diffusion.evaluation.report import evaluate_images  # noqa: E402
from mnist_diffusion.pipeline import half_mask  # noqa: E402

# (model, method, resample, sampler) -- sampler None = the model's default (DPM-Solver++(2M)), at `inpaint_steps`
SETTINGS = [
    ("ddpm-cond", "project", 1, None), ("ddpm-cond", "replace", 1, None),
    ("ddpm-cond", "project", 3, "ddim"), ("ddpm-cond", "replace", 3, "ddim"),
    ("ldm", "project", 1, None), ("ldm", "replace", 1, None),
    ("ldm", "project", 3, "ddim"), ("ldm", "replace", 3, "ddim"),
]


def score(images: np.ndarray, labels: np.ndarray) -> dict:
    r = evaluate_images(images, labels, metrics=["fid", "label_accuracy"], with_baselines=False)["samples"]
    return {"label_accuracy": r["label_accuracy"], "fid": r["fid"]}


def steps_sweep(images: np.ndarray, labels: np.ndarray, entries: list[str]) -> list[dict]:
    """Completions of the top halves, projection, no label, at each MODEL:STEPS of `entries`."""
    rows, pipes = [], {}
    for entry in entries:
        model, _, steps = entry.partition(":")
        pipe = pipes.setdefault(model, mnist_diffusion.load(model))
        started = time.perf_counter()
        out = pipe.inpaint(images, half_mask("top", len(images)), steps=int(steps))
        rows.append({"model": model, "steps": int(steps), "images_per_s": len(images) / (time.perf_counter() - started),
                     **score(out.images, labels)})
        print("steps", entry, f"{rows[-1]['label_accuracy']:.3f} {rows[-1]['fid']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sides", nargs="+", default=["top", "left"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sweep", nargs="*", metavar="MODEL:STEPS",
                    default=["ddpm-cond:8", "ddpm-cond:12", "ddpm-cond:20", "ddpm-cond:30", "ddpm-cond:50", "ldm:20",
                             "ldm:50", "ddpm-cond-fast:2", "ddpm-cond-fast:20", "ldm-fast:4", "ldm-fast:20"],
                    help="steps sweep rows: top half known, projection, no label (none: --sweep with no values)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "inpainting.md")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = load_split("mnist", "test")
    images, labels = images[: args.n], labels[: args.n]
    pipes = {name: mnist_diffusion.load(name) for name in ("ddpm-cond", "ldm")}
    rows = []
    for side in args.sides:
        mask = half_mask(side, args.n)
        rows.append({"side": side, "set": "real full digits", **score(images, labels)})
        rows.append({"side": side, "set": "known half, rest black",
                     **score((images * mask).astype(np.uint8), labels)})
        runs = [(m, meth, r, s, None) for m, meth, r, s in SETTINGS] + [("ddpm-cond", "project", 1, None, "true"),
                                                                        ("ldm", "project", 1, None, "true")]
        for model, method, resample, sampler, given in runs:
            started = time.perf_counter()
            out = pipes[model].inpaint(images, mask, labels=labels if given else None, method=method,
                                       resample=resample, sampler=sampler)
            seconds = time.perf_counter() - started
            known = mask > 0
            assert np.array_equal(out.images[known], images[known])  # the known half, exactly
            name = (f"`{model}` {method}" + (f", RePaint x{resample} ({sampler})" if resample > 1 else "")
                    + (", true label given" if given else ""))
            rows.append({"side": side, "set": name, "model": model, "method": method, "resample": resample,
                         "sampler": out.settings["sampler"], "steps": out.settings["steps"], "label_given": bool(given),
                         "images_per_s": args.n / seconds, **score(out.images, labels)})
            print(side, name, f"{rows[-1]['label_accuracy']:.3f}", f"{rows[-1]['fid']:.3f}",
                  f"{rows[-1]['images_per_s']:.1f} img/s", flush=True)
    lines = [
        "# Digit completion (inpainting)",
        "",
        f"Command: `python benchmarks/inpainting.py --n {args.n}`" + (f" --threads {args.threads}" if args.threads else ""),
        f"Machine: {machine_info()}",
        "",
        f"The first {args.n} MNIST test digits with one half known; the models complete the other half without "
        "being told the digit (unless the row says so). Label accuracy: the evaluator's class of each completion "
        f"against the digit's true label. FID@{args.n} against the test set's statistics (every set shares the known "
        "halves, so FIDs compare within this table only). Known pixels come back exactly in every row (checked).",
        "",
        "| known half | set | label accuracy | FID | images/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ips = f"{r['images_per_s']:.1f}" if "images_per_s" in r else ""
        steps = f" ({r['steps']} steps)" if "steps" in r else ""
        lines.append(f"| {r['side']} | {r['set']}{steps} | {r['label_accuracy']:.3f} | {r['fid']:.3f} | {ips} |")
    sweep = steps_sweep(images, labels, args.sweep)
    if sweep:
        lines += ["", "## Steps: top half known, x0 projection, no label", "",
                  "What `inpaint_steps` (the model's sampling steps, but at least 20; a distilled student its own) is "
                  "worth; the same seeds in every row.", "",
                  "| model | steps | label accuracy | FID | images/s |", "|---|---|---|---|---|"]
        lines += [f"| `{r['model']}` | {r['steps']} | {r['label_accuracy']:.3f} | {r['fid']:.3f} | "
                  f"{r['images_per_s']:.1f} |" for r in sweep]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"n": args.n, "machine": machine_info(), "rows": rows,
                                                         "steps_sweep": sweep}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
