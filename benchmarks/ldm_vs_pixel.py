"""Latent vs pixel diffusion: sampling images/s at the same sampler, steps and guidance, plus the shipped `ldm`
pipeline's quality (10,000 guided samples) and its autoencoder's reconstructions, in one run.

Both sides draw the same digits (labels 0-9 cycling) with the same sampler, number of steps, guidance scale,
batch size and threads; the latent side's time includes decoding. The timed repeats alternate between the
sides and the median is reported. The pixel side is the packaged `ddpm-cond` model; where it is not packaged
yet, a freshly initialised network of the `ddpm-cond` recipe stands in (the same cost per step) and the
results say so.

    python benchmarks/ldm_vs_pixel.py [--threads 1] [--steps 20] [--guidance G] [--n 256] [--repeats 3]
                                      [--quality-n 10000]

Writes benchmarks/results/ldm_vs_pixel.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from mnist_diffusion.assets import packaged_path  # noqa: E402
from mnist_diffusion.data import load_split  # noqa: E402
from mnist_diffusion.errors import UserError  # noqa: E402
from mnist_diffusion.models import build_model, count_parameters  # noqa: E402
from mnist_diffusion.pipeline import Pipeline, load  # noqa: E402
from mnist_diffusion.recipes import get_recipe  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ldm_vs_pixel.md"


def pixel_model() -> tuple[Pipeline, str]:
    """The packaged ddpm-cond model, or a fresh network of its recipe when none is packaged yet."""
    try:
        return load(packaged_path("ddpm-cond")), "packaged `ddpm-cond` model"
    except UserError:
        cfg = get_recipe("ddpm-cond")
        torch.manual_seed(0)
        net = build_model(cfg.model).eval()
        return Pipeline(cfg, net, torch.device("cpu")), (
            "freshly initialised `ddpm-cond` network (no packaged `ddpm-cond` model existed when this ran; "
            "the cost per step is the same, the images are not)")


def time_sampling(pipe: Pipeline, n: int, steps: int, guidance: float, sampler: str) -> float:
    t0 = time.perf_counter()
    pipe.sample(n, sampler=sampler, steps=steps, guidance=guidance, labels="0-9", seed=0, batch_size=n)
    return n / (time.perf_counter() - t0)


def speed(pixel: Pipeline, ldm: Pipeline, args) -> dict:
    rates = {"pixel": [], "latent": []}
    for side, model in (("pixel", pixel), ("latent", ldm)):  # warm-up (allocator, oneDNN kernels)
        time_sampling(model, min(args.n, 32), 2, args.guidance, args.sampler)
    for _ in range(args.repeats):
        for side, model in (("pixel", pixel), ("latent", ldm)):
            rates[side].append(time_sampling(model, args.n, args.steps, args.guidance, args.sampler))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"rates": rates, "median": med, "speedup": med["latent"] / med["pixel"]}


def quality(ldm: Pipeline, args) -> dict:
    from mnist_diffusion.evaluation.report import evaluate_images
    from mnist_diffusion.latent import reconstruct, reconstruction_psnr

    out = {}
    t0 = time.perf_counter()
    drawn = ldm.sample(args.quality_n, steps=args.steps, guidance=args.guidance, labels="0-9", seed=0)
    images, labels = drawn.images, drawn.labels
    out["sample_seconds"] = time.perf_counter() - t0
    out["samples"] = evaluate_images(images, labels, metrics=["fid", "classes", "label_accuracy"], seed=0,
                                     source="ldm samples")
    # The samples cycle through the digits (equal counts) while the test set does not; real training images
    # drawn with the same equal counts show how much of the FID that label balance alone accounts for.
    train_images, train_labels = load_split("mnist", "train")
    rng = np.random.default_rng(0)
    per_digit = max(1, args.quality_n // 10)
    idx = np.concatenate([rng.choice(np.flatnonzero(train_labels == d), per_digit, replace=False) for d in range(10)])
    out["balanced"] = evaluate_images(train_images[idx], train_labels[idx], metrics=["fid"], seed=0,
                                      source="real training images, equal counts per digit")
    test_images, test_labels = load_split("mnist", "test")
    rec = reconstruct(ldm.autoencoder, test_images)
    out["psnr"] = reconstruction_psnr(test_images, rec)
    out["reconstructions"] = evaluate_images(rec, test_labels, metrics=["fid", "label_accuracy"], seed=0,
                                             source="autoencoder reconstructions of the test set")
    return out


def _fid(report: dict, key: str) -> float:
    return report["samples"]["fid"] if key == "samples" else report["baselines"]["train"]["fid"]


def write_results(args, pixel: Pipeline, pixel_note: str, ldm: Pipeline, sp: dict, q: dict | None) -> str:
    command = "python benchmarks/ldm_vs_pixel.py " + " ".join(sys.argv[1:])
    meta = ldm_info(ldm)
    lines = [
        "# Latent vs pixel diffusion", "",
        f"Command: `{command.strip()}`  ", f"Machine: {machine_info()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
        "## Sampling speed", "",
        f"Both sides: sampler `{args.sampler}`, {args.steps} steps, guidance {args.guidance:g} (one batched "
        f"conditional + unconditional pass per step), batches of {args.n} digits 0-9, {args.threads} thread(s); "
        f"median of {args.repeats} alternating repeats. The latent time includes decoding.", "",
        "| side | network | parameters | images/s (median) | repeats |",
        "|---|---|---|---|---|",
        f"| pixel | {pixel_note} | {count_parameters(pixel.net):,} | {sp['median']['pixel']:.1f} | "
        f"{', '.join(f'{r:.1f}' for r in sp['rates']['pixel'])} |",
        f"| latent | {'shipped `ldm`' if args.ldm == 'ldm' else f'`{args.ldm}`'} ({tuple(ldm.config.latent.shape)} "
        f"latents) + its autoencoder's decoder | "
        f"{count_parameters(ldm.net):,} + {count_parameters(ldm.autoencoder.net):,} | "
        f"{sp['median']['latent']:.1f} | {', '.join(f'{r:.1f}' for r in sp['rates']['latent'])} |",
        "", f"**Latent sampling is {sp['speedup']:.1f}x faster** at the same steps and guidance.", "",
    ]
    if meta:
        lines += ["## Training (the shipped pipeline, as recorded in its files)", ""]
        lines += [f"- {k}: {v}" for k, v in meta.items()]
        lines.append("")
    if q is not None:
        s, r = q["samples"], q["reconstructions"]
        lines += [
            "## Quality", "",
            f"Evaluator sha256 `{s['evaluator']['sha256'][:16]}`; reference: MNIST {s['reference']['split']} "
            f"({s['reference']['n']} images). The baseline is the same number of real training images.", "",
            "| set | N | FID | train-vs-test FID (baseline) | FID / baseline | label accuracy |",
            "|---|---|---|---|---|---|",
            f"| `ldm` samples, guidance {args.guidance:g}, {args.steps} steps | {s['n']} | {_fid(s, 'samples'):.3f} | "
            f"{_fid(s, 'train'):.3f} | {_fid(s, 'samples') / _fid(s, 'train'):.1f}x | "
            f"{s['samples']['label_accuracy']:.4f} |",
            f"| real training images, {q['balanced']['n'] // 10} per digit (the samples' label balance) | "
            f"{q['balanced']['n']} | {_fid(q['balanced'], 'samples'):.3f} | {_fid(q['balanced'], 'train'):.3f} | "
            f"{_fid(q['balanced'], 'samples') / _fid(q['balanced'], 'train'):.1f}x | |",
            f"| `ldm-ae` reconstructions of the test set (PSNR {q['psnr']:.2f} dB) | {r['n']} | "
            f"{_fid(r, 'samples'):.3f} | {_fid(r, 'train'):.3f} | {_fid(r, 'samples') / _fid(r, 'train'):.1f}x | "
            f"{r['samples']['label_accuracy']:.4f} |",
            "", f"Drawing the {s['n']} samples took {q['sample_seconds']:.0f} s.", "",
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    return "\n".join(lines)


def ldm_info(ldm: Pipeline) -> dict:
    """The training notes recorded in the shipped file's metadata (see assets/ldm.md), if any."""
    from mnist_diffusion.checkpoint import read_metadata

    meta = read_metadata(ldm.path) if ldm.path else {}
    return json.loads(meta["training"]) if "training" in meta else {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ldm", default="ldm", help="latent model: packaged name or path (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, help="guidance scale for both sides (default: the latent model's)")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--n", type=int, default=256, help="images per timed batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quality-n", type=int, default=10_000, help="guided samples to evaluate (0 = skip quality)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ldm = load(args.ldm)
    if args.guidance is None:
        args.guidance = ldm.config.sample.guidance
    pixel, note = pixel_model()
    sp = speed(pixel, ldm, args)
    print(f"pixel {sp['median']['pixel']:.1f} img/s, latent {sp['median']['latent']:.1f} img/s: "
          f"{sp['speedup']:.1f}x", flush=True)
    q = quality(ldm, args) if args.quality_n else None
    print(write_results(args, pixel, note, ldm, sp, q))


if __name__ == "__main__":
    main()
