"""On a CUDA GPU: training and sampling speed by numerics, and the CUDA path end to end (the GPU tests, the
`ddpm-cond` recipe trained under torchrun, 10,000 digits drawn and scored). `python -m benchmarks run gpu`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import sampling, training
from benchmarks.core import ROOT, BenchError, Param, case
from benchmarks.quality import scores


def need_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BenchError("the gpu suite needs a CUDA GPU, and this torch build sees none.")


@case(
    "gpu.training",
    recipe=Param(("ddpm-cond", "ldm", "seed"), quick=("ddpm-cond",)),
    variant=Param(("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"), quick=("fp32", "bf16")),
    steps=Param(50, quick=5),
    rounds=Param(4, quick=1),
    warmup=Param(1),
    data_limit=Param(16384, quick=2048),
)
def gpu_training(recipe, variant, steps, rounds, warmup, data_limit):
    """Training images/s of each recipe on the GPU, variants timed in turn (the device synchronised)."""
    need_cuda()
    for r in recipe:
        yield from training.compare(r, variant, steps, rounds, warmup, "cuda", data_limit)


@case(
    "gpu.sampling",
    model=Param(sampling.MODELS, quick=("ddpm-cond",)),
    variant=Param(("fp32", "bf16")),
    n=Param(10_000, quick=500),
    batch=Param(1000, quick=250),
    rounds=Param(2, quick=1),
)
def gpu_sampling(model, variant, n, batch, rounds):
    """Images/s of the packaged models on the GPU at their default sampler settings."""
    need_cuda()
    yield from sampling.speed(model, variant, n, rounds, batch, "cuda")


def _run(cmd: list[str], log: Path) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    log.write_text(done.stdout + done.stderr)
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    return done.returncode, time.perf_counter() - t0, tail[0]


@case(
    "gpu.check",
    max_steps=Param(0, quick=200, help="train.max_steps (0: the full recipe)"),
    n=Param(10_000, quick=1000),
    tests=Param(True, quick=False),
)
def check(max_steps, n, tests):
    """The GPU tests, the ddpm-cond recipe trained under torchrun on one GPU, then N digits of that run and of
    the packaged model drawn on the GPU and scored."""
    need_cuda()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if tests:
            rc, seconds, tail = _run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_cuda.py", "-m", "gpu", "-q"],
                work / "tests.log",
            )
            yield {"step": "gpu tests"}, {"exit_code": rc, "seconds": seconds, "summary": tail}
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=1",
            "--standalone",
            "-m",
            "mnist_diffusion",
            "train",
            "--recipe",
            "ddpm-cond",
            "--device",
            "cuda",
            "--no-progress",
            "--no-samples",
            "--out",
            str(work / "run"),
        ]
        rc, seconds, tail = _run(
            cmd + (["--set", f"train.max_steps={max_steps}"] if max_steps else []), work / "train.log"
        )
        yield {"step": "train ddpm-cond under torchrun"}, {"exit_code": rc, "seconds": seconds, "summary": tail}
        for model in ([str(work / "run")] if rc == 0 else []) + ["ddpm-cond"]:
            pipe = sampling.load(model, "fp32", "cuda")
            t0 = time.perf_counter()
            out = pipe.sample(n, labels="0-9", seed=0, batch_size=1000)
            drawn_s = time.perf_counter() - t0
            yield (
                {"step": "sample and score", "model": "this run" if model != "ddpm-cond" else model},
                {**scores(out.images, out.labels, ("fid", "label_accuracy")), "sample_s": drawn_s},
            )
