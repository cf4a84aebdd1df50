"""Sampling: images/s of the packaged models by numerics and batch, latent against pixel diffusion, and whether
the same seed still draws bit-identical digits."""

from __future__ import annotations

import hashlib

from benchmarks import core
from benchmarks.core import Param, alternate, case, last_record, median

MODELS = ("ddpm-cond", "ldm", "ddpm-cond-fast", "ldm-fast")
VARIANTS = ("auto", "fp32", "bf16", "fp32+compile", "bf16+compile")


def load(model: str, variant: str = "auto", device: str = "cpu"):
    """A packaged model (or run, or file) in a variant: 'PRECISION' or 'PRECISION+compile'."""
    import mnist_diffusion

    precision, _, compiled = variant.partition("+")
    return mnist_diffusion.load(model, device=device, precision=precision, compile=bool(compiled))


def speeds(pipes: dict, n: int, rounds: int, **sample) -> dict[str, dict]:
    """Images/s of `pipe.sample(n)` for each pipeline, alternated round after round (`core.alternate`); the
    warm-up call holds any compile."""
    seconds = alternate({k: (lambda p=p: p.sample(n, seed=1, **sample)) for k, p in pipes.items()}, rounds)
    first = median(seconds[next(iter(pipes))])
    return {
        k: {
            "images_per_s": n / median(seconds[k]),
            "best_images_per_s": n / min(seconds[k]),
            "over_first": first / median(seconds[k]),
            "warmup_s": seconds[f"{k}:warmup"][0],
        }
        for k in pipes
    }


@case(
    "sampling.speed",
    model=Param(MODELS, quick=("ddpm-cond", "ldm-fast"), help="packaged models (or runs)"),
    variant=Param(("auto",), choices=VARIANTS, help="numerics, e.g. fp32,bf16,bf16+compile (timed in turn)"),
    n=Param(256, quick=16, help="digits per timed call"),
    rounds=Param(3, quick=1),
    batch=Param(0, help="digits per network call (0: the pipeline's default)"),
    device=Param("cpu", choices=("cpu", "cuda")),
)
def speed(model, variant, n, rounds, batch, device):
    """Images/s of each model at its default sampler settings, numerics variants timed in turn."""
    for m in model:
        pipes = {v: load(m, v, device) for v in variant}
        for v, r in speeds(pipes, n, rounds, batch_size=batch or None).items():
            p = pipes[v]
            yield (
                {"model": m, "variant": v},
                {
                    **r,
                    "precision": p.precision.precision,
                    "batch": batch or p.default_batch_size,
                    "s_per_10000": 10_000 / r["images_per_s"],
                },
            )


@case(
    "sampling.batch",
    model=Param(("ddpm-cond-fast", "ldm-fast"), quick=("ldm-fast",)),
    batch=Param((64, 128, 256, 512), quick=(16, 32)),
    n=Param(2048, quick=64),
    rounds=Param(2, quick=1),
)
def batch_sizes(model, batch, n, rounds):
    """Images/s against the batch size at the model's defaults (what `Pipeline.sample` should default to)."""
    for m in model:
        pipe = load(m)
        seconds = alternate({b: (lambda b=b, pipe=pipe: pipe.sample(n, seed=0, batch_size=b)) for b in batch}, rounds)
        for b in batch:
            yield (
                {"model": m, "batch": b},
                {
                    "images_per_s": n / min(seconds[b]),
                    "precision": pipe.precision.precision,
                    "package_default": pipe.default_batch_size,
                },
            )


@case(
    "sampling.latent_vs_pixel",
    sampler=Param("dpmpp_2m"),
    steps=Param(20, quick=4),
    guidance=Param(2.0),
    n=Param(256, quick=16),
    rounds=Param(3, quick=1),
    threads=Param(1, help="torch threads (0: all)"),
)
def latent_vs_pixel(sampler, steps, guidance, n, rounds, threads):
    """The packaged ldm (decoding included) against the pixel ddpm-cond at the same sampler, steps and guidance."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    pipes = {"pixel": load("ddpm-cond", "fp32"), "latent": load("ldm", "fp32")}
    r = speeds(pipes, n, rounds, sampler=sampler, steps=steps, guidance=guidance, batch_size=n, labels="0-9")
    for side, pipe in pipes.items():
        yield (
            {"side": side, "model": pipe.name},
            {"images_per_s": r[side]["images_per_s"], "latent_over_pixel": r["latent"]["over_first"]},
        )


def _half_mask(side: str, n: int):
    try:
        from mnist_diffusion.inpainting import half_mask
    except ImportError:
        from mnist_diffusion.pipeline import half_mask
    return half_mask(side, n)


def digits_hashes(name: str, precision: str, inpaint: bool) -> dict[str, str]:
    """sha256 of the uint8 digits `load(name, precision).sample(12, seed=3)` draws and, with `inpaint`, of the
    completion of their top halves (`inpaint`, seed 5, 4 steps)."""
    pipe = load(name, precision)
    images = pipe.sample(12, seed=3).images
    out = {"sample_sha256": hashlib.sha256(images.tobytes()).hexdigest()}
    if inpaint:
        done = pipe.inpaint(images[:4], _half_mask("top", 4), seed=5, steps=4).images
        out["inpaint_sha256"] = hashlib.sha256(done.tobytes()).hexdigest()
    return out


@case(
    "sampling.identical_digits",
    model=Param((), help="names (default: every packaged model)"),
    precision=Param(("fp32", "bf16"), choices=("fp32", "bf16")),
)
def identical_digits(model, precision):
    """The same seed draws bit-identical digits: sha256 of every packaged model's digits against the newest
    earlier record on this processor kind (bf16 rounds differently on other instruction sets)."""
    from benchmarks.core import machine
    from mnist_diffusion.assets import PACKAGED

    kind = machine()["kind"]
    names = model or tuple(n for n, a in PACKAGED.items() if a.kind != "evaluator")
    for name in names:
        for p in precision:
            got = digits_hashes(name, p, PACKAGED[name].kind != "autoencoder" if name in PACKAGED else True)
            variant = {"model": name, "precision": p, "processor_kind": kind}
            before = last_record(
                core.results_dir,
                "sampling",
                lambda r, want=dict(variant): (
                    r["case"] == "identical_digits" and all(r["params"].get(k) == v for k, v in want.items())
                ),
            )
            if before is None:
                verdict = "no earlier record"
            else:
                keys = {k for k in [*got, *before["metrics"]] if k.endswith("_sha256")}
                same = all(before["metrics"].get(k) == got.get(k) for k in keys)
                verdict = "match" if same else "MISMATCH"
                variant["notes"] = (
                    f"against the record of {before['date']} at {(before.get('git') or {}).get('revision')}"
                )
            yield variant, {**got, "verdict": verdict}
