"""Do the packaged models still draw and score as before? Samples through the public API against saved samples.

For each packaged model, draws N digits (labels 0-9 cycling, seed 0, the model's default sampler settings) with
`mnist_diffusion.load(name).sample(...)`, compares them pixel by pixel with samples saved earlier by another
version of the code (`--before DIR` holding NAME.npz files, images + labels, as `sample --npz` writes them), and
scores both sets with the project's evaluator (FID, KID, label accuracy at the same N and seeds).

    python benchmarks/api_equivalence.py --before /path/to/old-samples --n 1000

Writes benchmarks/results/api_equivalence.md (or --out).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mnist_diffusion  # noqa: E402
from _machine import machine_info  # noqa: E402
from mnist_diffusion.evaluation.report import evaluate_images, read_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="folder of NAME.npz samples from the earlier code")
    ap.add_argument("--models", nargs="+", default=list(mnist_diffusion.assets.names("model")))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--note", default="", help="where the earlier samples came from (commit, command)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "api_equivalence.md")
    args = ap.parse_args()
    rows = []
    for name in args.models:
        started = time.perf_counter()
        now = mnist_diffusion.load(name).sample(args.n, labels="0-9", seed=0)
        seconds = time.perf_counter() - started
        before_images, before_labels = read_samples(args.before / f"{name}.npz", args.n)
        diff = np.abs(now.images.astype(int) - before_images.astype(int))
        scores = [evaluate_images(images, labels, metrics=["fid", "kid", "label_accuracy"], with_baselines=False,
                                  source=f"{name} {which}")["samples"]
                  for which, images, labels in (("now", now.images, now.labels),
                                                ("before", before_images, before_labels))]
        rows.append((name, bool(np.array_equal(now.images, before_images) and np.array_equal(now.labels,
                                                                                            before_labels)),
                     float((diff > 0).mean()), int(diff.max()), scores, seconds))
        print(name, rows[-1][1:4], [s["fid"] for s in scores], flush=True)
    lines = [
        "# Packaged models through the public API, against samples saved by earlier code",
        "",
        f"Command: `python benchmarks/api_equivalence.py --before {args.before} --n {args.n}`",
        f"Machine: {machine_info()}",
        f"Earlier samples: {args.note or args.before}",
        "",
        f"Each model: {args.n} samples, labels 0-9 cycling, seed 0, its default sampler settings, drawn with "
        "`mnist_diffusion.load(name).sample(...)`; both sets scored by the packaged evaluator.",
        "",
        "| model | identical images | pixels that differ | largest difference | FID now | FID before | "
        "KID now | KID before | label accuracy now | before | seconds to draw |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, same, frac, top, (now_s, before_s), seconds in rows:
        lines.append(f"| `{name}` | {'yes' if same else 'no'} | {frac:.4%} | {top} | {now_s['fid']:.3f} | "
                     f"{before_s['fid']:.3f} | {now_s['kid_mean']:.2e} | {before_s['kid_mean']:.2e} | "
                     f"{now_s['label_accuracy']:.4f} | {before_s['label_accuracy']:.4f} | {seconds:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
