"""Quality, judged by the packaged evaluator against the MNIST test set: samples at given sampler settings, the
evaluator's own baselines, digit completion and the autoencoder's reconstructions."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.core import Param, case, say
from benchmarks.masks import FAMILIES, masks
from benchmarks.sampling import load

SCORES = ("fid", "kid_mean", "kid_std", "precision", "recall", "label_accuracy", "class_entropy_bits")


def scores(images, labels, metrics=None, baselines: bool = True, seed: int = 0) -> dict[str, float]:
    """The evaluator's scalar scores of a set, and the train-vs-test baseline FID at the same N."""
    from mnist_diffusion.evaluation.report import evaluate_images

    report = evaluate_images(images, labels, metrics=metrics, with_baselines=baselines, seed=seed)
    s = report["samples"]
    out = {k: float(s[k]) for k in SCORES if isinstance(s.get(k), (int, float))}
    if "memorisation" in s:
        out["near_copies"] = float(s["memorisation"]["copy_fraction"])
    if baselines:
        out["baseline_fid"] = float(report["baselines"]["train"]["fid"])
        out["fid_over_baseline"] = out["fid"] / out["baseline_fid"]
    return out


def count_evaluations(pipe, n: int = 20, **settings) -> float:
    """Network evaluations per image of `pipe.sample` at these settings, counted by a hook on the network."""
    count = [0]
    hook = pipe.net.register_forward_hook(lambda m, i, out: count.__setitem__(0, count[0] + len(out)))
    try:
        pipe.sample(n, seed=10**6, **settings)
    finally:
        hook.remove()
    return count[0] / n


def interval_arg(text: str) -> dict:
    if text == "model":
        return {}
    return {"guidance_interval": None if text == "all" else tuple(float(v) for v in text.split(","))}


@case(
    "quality.sampling",
    model=Param(("ddpm-cond",), help="packaged names, runs or files"),
    setting=Param(("",), help="SAMPLER:STEPS[:GUIDANCE] ('' = the model's defaults)"),
    interval=Param("model", help="where guidance applies: model, all, or LOW,HIGH in sigma"),
    guide=Param("", help="autoguidance: a weaker model guides instead of the unconditional pass"),
    labels=Param("0-9", choices=("0-9", "data"), help="data: the baseline images' class mix"),
    n=Param(10_000, quick=100),
    precision=Param("auto", choices=("auto", "fp32", "bf16")),
    compile=Param(False),
    batch=Param(0),
    device=Param("cpu", choices=("cpu", "cuda", "auto")),
)
def sampling(model, setting, interval, guide, labels, n, precision, compile, batch, device):
    """FID, KID, precision/recall and label accuracy of N digits per model and sampler setting, with speed."""
    from mnist_diffusion.evaluation.report import baseline_labels

    variant = f"{precision}+compile" if compile else precision
    wanted = baseline_labels(n).tolist() if labels == "data" else "0-9"
    for m in model:
        pipe = load(m, variant, device)
        counter = load(m, precision, device) if compile else pipe  # a hook would split a compiled graph
        if guide:
            pipe.autoguide(load(guide, precision, device))
            counter = pipe
        for s in setting:
            sampler, _, rest = s.partition(":")
            steps, _, guidance = rest.partition(":")
            kw = {
                "sampler": sampler or None,
                "steps": int(steps) if steps else None,
                "guidance": float(guidance) if guidance else None,
                **interval_arg(interval),
            }
            evaluations = count_evaluations(counter, **kw)
            size = batch or pipe.default_batch_size
            warmup = time.perf_counter()
            pipe.sample(size, seed=10**6, batch_size=size, **kw)  # untimed: kernels, buffers, the compile
            warmup = time.perf_counter() - warmup
            out = pipe.sample(n, labels=wanted, seed=0, batch_size=size, **kw)
            seconds = out.settings["seconds"]
            got = out.settings
            where = got.get("guidance_interval")
            yield (
                {
                    "model": m,
                    "sampler": got["sampler"],
                    "steps": got["steps"],
                    "guidance": got["guidance"],
                    "interval": "all" if where is None else ",".join(f"{v:g}" for v in where),
                },
                {
                    **scores(out.images, out.labels),
                    "evaluations_per_image": evaluations,
                    "images_per_s": n / seconds,
                    "seconds": seconds,
                    "warmup_s": warmup,
                    "precision_used": pipe.precision.precision,
                },
            )


@case("quality.evaluator_baselines", n=Param(10_000, quick=500), seed=Param(0))
def evaluator_baselines(n, seed):
    """What the evaluator says of real digits and noise: test images (~0), training images (the best a generator
    can expect), training images with equal counts per digit (a sampler's label balance), uniform noise."""
    from mnist_diffusion.data import load_split

    rng = np.random.default_rng(seed)
    test_x, test_y = load_split("mnist", "test")
    train_x, train_y = load_split("mnist", "train")
    pick = rng.choice(len(train_x), n, replace=False)
    balanced = np.concatenate([rng.choice(np.flatnonzero(train_y == d), n // 10, replace=False) for d in range(10)])
    inputs = {
        "test": (test_x[:n], test_y[:n]),
        "train": (train_x[pick], train_y[pick]),
        "train, equal counts per digit": (train_x[balanced], train_y[balanced]),
        "uniform noise": (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)),
    }
    for name, (images, labels) in inputs.items():
        t0 = time.perf_counter()
        got = scores(images, labels.astype(np.int64), baselines=False, seed=seed)
        yield {"input": name}, {**got, "seconds": time.perf_counter() - t0}


@case(
    "quality.inpainting",
    model=Param(("ddpm-cond", "ldm")),
    mask=Param(("top", "left", "strokes", "erasures"), choices=FAMILIES, help="mask families (benchmarks/masks.py)"),
    method=Param(("project", "replace"), choices=("project", "replace")),
    resample=Param((1, 3)),
    label_given=Param((False,)),
    steps=Param((0,), help="sampler steps (0: the pipeline's inpaint_steps)"),
    n=Param(1000, quick=20),
)
def inpainting(model, mask, method, resample, label_given, steps, n):
    """Digit completion: label accuracy and FID of N test digits completed from the known pixels of each mask
    family (halves; hand-drawn-like strokes; free-form erasures), beside the known pixels alone on black and the
    real digits (the sets of one family share their known pixels: compare FIDs within one family and run)."""
    from mnist_diffusion.data import load_split

    images, labels = (a[:n] for a in load_split("mnist", "test"))
    pipes = {m: load(m) for m in model}
    for family in mask:
        known = masks(family, images)
        say(f"   {family}: {known.mean():.0%} of the pixels known")
        yield {"mask": family, "set": "real digits"}, scores(images, labels, ("fid", "label_accuracy"), False)
        yield (
            {"mask": family, "set": "known pixels, rest black"},
            scores((images * known).astype(np.uint8), labels, ("fid", "label_accuracy"), False),
        )
        for m, meth, r, given, st in (
            (m, a, r, g, st) for m in model for a in method for r in resample for g in label_given for st in steps
        ):
            out = pipes[m].inpaint(
                images,
                known,
                labels=labels if given else None,
                method=meth,
                resample=r,
                sampler="ddim" if r > 1 else None,
                steps=st or None,
            )
            if not np.array_equal(out.images[known > 0], images[known > 0]):
                say(f"   {m} {meth}: the known pixels did not come back exactly")
            yield (
                {
                    "mask": family,
                    "model": m,
                    "method": meth,
                    "resample": r,
                    "label_given": given,
                    "sampler": out.settings["sampler"],
                    "steps": out.settings["steps"],
                },
                {
                    **scores(out.images, labels, ("fid", "label_accuracy"), False),
                    "known_fraction": float(known.mean()),
                    "images_per_s": n / out.settings["seconds"],
                },
            )


@case("quality.autoencoder", model=Param("ldm"), n=Param(10_000, quick=200))
def autoencoder(model, n):
    """The latent model's autoencoder: PSNR, FID and label accuracy of its reconstructions of the test digits."""
    from mnist_diffusion.data import load_split
    from mnist_diffusion.latent import reconstruct, reconstruction_psnr

    images, labels = (a[:n] for a in load_split("mnist", "test"))
    rec = reconstruct(load(model, "fp32").autoencoder, images)
    yield (
        {"set": "reconstructions of the test digits"},
        {"psnr_db": float(reconstruction_psnr(images, rec)), **scores(rec, labels, ("fid", "label_accuracy"))},
    )
