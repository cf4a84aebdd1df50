"""fp32 against bf16 on this processor, every bf16 figure in one suite: what `--precision auto` picks and why, the
matmul and convolution peaks, sampling and training speed in each numerics, the bf16 decoder, and whether bf16
digits score as fp32's. On a CPU with AMX or AVX-512-BF16: `python -m benchmarks run precision`."""

from __future__ import annotations

import copy

import numpy as np

from benchmarks import sampling, training
from benchmarks.core import Param, alternate, case, median
from benchmarks.quality import scores

case(
    "precision.sampling",
    model=Param(("ddpm-cond", "ldm")),
    variant=Param(("fp32", "bf16", "bf16+compile"), quick=("fp32", "bf16"), choices=sampling.VARIANTS),
    n=Param(256, quick=16),
    rounds=Param(5, quick=1),
    batch=Param(0),
    device=Param("cpu", choices=("cpu", "cuda")),
)(sampling.speed)
case(
    "precision.training",
    recipe=Param(("ddpm-cond", "ldm"), quick=("ddpm-cond",)),
    variant=Param(
        ("fp32", "bf16", "fp32+nchw", "fp32+channels_last", "bf16+nchw", "bf16+channels_last", "bf16+compile"),
        quick=("fp32", "bf16"),
    ),
    steps=Param(3, quick=1),
    rounds=Param(5, quick=1),
    warmup=Param(2, quick=1),
    data_limit=Param(4096, quick=512),
)(training.speed)


@case("precision.peaks", matmul_n=Param(1024, quick=512), rounds=Param(5, quick=2))
def peaks(matmul_n, rounds):
    """What `auto` picks here and why; fp32 and bf16 GFLOP/s of `torch.mm` (N x N) and of the 3x3 convolution on
    a channels_last 28x28 map that `auto`'s probe times."""
    import torch

    from mnist_diffusion.precision import resolve_precision

    a = torch.randn(matmul_n, matmul_n)
    x = torch.randn(16, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    work = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        m, c, xc = a.to(dtype), copy.deepcopy(conv).to(dtype), x.to(dtype)
        work[f"matmul {name}"] = (lambda m=m: m @ m, 2 * matmul_n**3)
        work[f"conv {name}"] = (lambda c=c, xc=xc: c(xc), 2 * 16 * 64 * 64 * 9 * 28 * 28)
    with torch.inference_mode():
        seconds = alternate({k: fn for k, (fn, _) in work.items()}, rounds, warmup=2)
    gflops = {k: flops / median(seconds[k]) / 1e9 for k, (_, flops) in work.items()}
    choice = {p: resolve_precision("auto", "cpu", p) for p in ("sample", "train")}
    yield (
        {},
        {
            **{k.replace(" ", "_") + "_gflop_per_s": v for k, v in gflops.items()},
            "matmul_bf16_over_fp32": gflops["matmul bf16"] / gflops["matmul fp32"],
            "conv_bf16_over_fp32": gflops["conv bf16"] / gflops["conv fp32"],
            **{f"auto_{p}": f"{c.precision} ({c.reason})" for p, c in choice.items()},
        },
    )


@case("precision.decoder", model=Param("ldm"), n=Param(256, quick=16), rounds=Param(7, quick=1))
def decoder(model, n, rounds):
    """A bf16 latent pipeline with its autoencoder in bf16 against fp32 (eager), the decoder alone in both
    numerics and layouts, and how far bf16 decoding moves the images."""
    import torch

    pipes = {"bf16 decoder": sampling.load(model, "bf16"), "fp32 decoder": sampling.load(model, "bf16")}
    pipes["fp32 decoder"].autoencoder.net.float()
    for k, r in sampling.speeds(pipes, n, rounds).items():
        yield {"pipeline": "bf16 sampling", "decoder": k}, {"images_per_s": r["images_per_s"]}
    ae = sampling.load(model, "fp32").autoencoder
    z = torch.randn(n, *ae.latent_shape, generator=torch.Generator().manual_seed(0))
    nets, outputs = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            key = f"{str(dtype)[6:]} {'NCHW' if layout == torch.contiguous_format else 'channels_last'}"
            nets[key] = (
                copy.deepcopy(ae.net).to(dtype).to(memory_format=layout),
                z.to(dtype).contiguous(memory_format=layout),
            )
    with torch.inference_mode():
        seconds = alternate({k: (lambda net=net, x=x: net.decode(x)) for k, (net, x) in nets.items()}, rounds)
        outputs = {k: net.decode(x).float() for k, (net, x) in nets.items()}
    diff = (outputs["bfloat16 NCHW"] - outputs["float32 NCHW"]).abs()
    for k in nets:
        extra = (
            {"mean_abs_diff_255": diff.mean().item() * 127.5, "max_abs_diff_255": diff.max().item() * 127.5}
            if k.startswith("bfloat16 NCHW")
            else {}
        )
        yield {"pipeline": "decoder alone", "decoder": k}, {"ms": 1e3 * median(seconds[k]), **extra}


@case(
    "precision.digits",
    model=Param(("ddpm-cond", "ldm")),
    variant=Param(("fp32", "bf16", "bf16+compile"), quick=("fp32", "bf16"), choices=sampling.VARIANTS),
    n=Param(2000, quick=40),
)
def digits(model, variant, n):
    """Each numerics draws N digits on the same seeds: FID and label accuracy, and the pixels that differ from
    fp32's; fp32 on other seeds shows how far FID moves between two draws at this N."""
    for m in model:
        first = None
        for v, seed in [(v, 0) for v in variant] + [(variant[0], n)]:
            out = sampling.load(m, v).sample(n, labels="0-9", seed=seed)
            got = scores(out.images, out.labels, ("fid", "label_accuracy"), False)
            if seed == 0:
                first = out.images if first is None else first
                d = np.abs(first.astype(int) - out.images.astype(int))
                got.update(
                    {
                        "pixels_differ": float((d > 0).mean()),
                        "pixels_differ_over_32": float((d > 32).mean()),
                        "mean_abs_diff_255": float(d.mean()),
                    }
                )
            yield {"model": m, "variant": v, "seeds": f"{seed}..{seed + n - 1}"}, got
