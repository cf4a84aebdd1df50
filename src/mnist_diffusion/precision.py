"""Which numerics a run uses -- fp32 or bf16 -- and why; the bf16 autocast of training.

`resolve_precision("auto" | "fp32" | "bf16", device, purpose)` returns a `PrecisionChoice`: the numerics and a
one-line reason, which runs record in metrics.jsonl and benchmarks print. What `auto` picks:

- CUDA: bf16 autocast for training where the GPU supports bf16 (docs/results.md, gpu suite);
  sampling stays fp32, which is what was measured on the GPU.
- CPU: bf16 only where the processor has bf16 matrix units -- AMX-BF16 or AVX-512-BF16 (x86) or the Arm BF16
  extension (`cpu.bf16_units`) -- AND the one-off probe of the U-Net's typical layer (a 3x3 convolution on a
  channels_last 28x28 map, `cpu.probe_bf16_speedup`, cached in the user cache directory per processor, torch
  version and thread count) confirms bf16 runs it at least `BF16_MIN_SPEEDUP` times as fast as fp32.
  Elsewhere (AVX2-only CPUs, where bf16 is much slower) fp32.
- MPS and anything else: fp32.

Training in bf16 is autocast (`autocast`): fp32 master weights, optimizer state and loss, matrix products in
bf16. Sampling in bf16 runs the network through `runtime.Bf16Network`: bf16 weights, x_t cast to bf16 at its
boundary and the output back to fp32, so the noise schedule, the guidance combination, the sampler's state
updates and the final image stay fp32; a latent model's autoencoder runs the same way.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Literal

import torch

from mnist_diffusion import cpu
from mnist_diffusion.data.cache import cache_dir
from mnist_diffusion.errors import UserError

Purpose = Literal["train", "sample"]
# A bf16 3x3 conv at least this many times as fast as fp32 before `auto` picks bf16 on a CPU. The whole U-Net gains
# less than its convolutions (its GroupNorm, SiLU and adds speed up less), so this is the floor below which bf16
# sampling did not pay on the processors measured (docs/results.md, precision suite; docs/performance.md).
BF16_MIN_SPEEDUP = 1.5


@dataclass(frozen=True)
class PrecisionChoice:
    """The numerics a run uses: precision 'fp32' | 'bf16', and why (one sentence fragment, for logs)."""

    precision: Literal["fp32", "bf16"]
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


def _cpu_auto() -> PrecisionChoice:
    units, found = cpu.bf16_units()
    if not units:
        return PrecisionChoice("fp32", f"auto: this CPU has {found}, where bf16 is slower than fp32")
    fp32, bf16 = cpu.probe_bf16_speedup(cache_dir() / cpu.PROBE_FILE)
    measured = f"a bf16 3x3 conv runs {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s ({bf16 / fp32:.1f}x)"
    if bf16 >= BF16_MIN_SPEEDUP * fp32:
        return PrecisionChoice("bf16", f"auto: this CPU has {found}; {measured}")
    return PrecisionChoice("fp32", f"auto: this CPU has {found}, but {measured}, under {BF16_MIN_SPEEDUP:g}x")


@functools.cache
def _resolve(requested: str, device_type: str, purpose: str, bf16_on_cuda: bool) -> PrecisionChoice:
    if requested not in ("auto", "fp32", "bf16"):
        raise UserError(f"Unknown precision {requested!r}; choose auto, fp32 or bf16.")
    if requested == "fp32":
        return PrecisionChoice("fp32", "asked for")
    if device_type == "cuda":
        if not bf16_on_cuda:
            if requested == "bf16":
                raise UserError("--precision bf16 was asked for, but this GPU does not support bf16; use fp32 or auto.")
            return PrecisionChoice("fp32", "auto: this GPU does not support bf16")
        if requested == "bf16":
            return PrecisionChoice("bf16", "asked for")
        if purpose == "train":
            return PrecisionChoice("bf16", "auto: bf16 autocast on CUDA")
        return PrecisionChoice("fp32", "auto: sampling on CUDA stays fp32 (bf16 not measured there yet)")
    if device_type == "cpu":
        if requested == "bf16":
            units, found = cpu.bf16_units()
            return PrecisionChoice(
                "bf16",
                "asked for" + ("" if units else f"; this CPU has {found}, so bf16 runs several times slower than fp32"),
            )
        return _cpu_auto()
    if requested == "bf16":
        raise UserError(f"--precision bf16 runs on the CPU and CUDA, not on {device_type}; use fp32 or auto.")
    return PrecisionChoice("fp32", f"auto: {device_type} runs fp32")


def resolve_precision(
    requested: str | PrecisionChoice, device: str | torch.device, purpose: Purpose = "sample"
) -> PrecisionChoice:
    """The numerics for `requested` ('auto' | 'fp32' | 'bf16') on `device`, for training or sampling.

    Decided once per process and argument set (the CPU probe once per machine); a bad value is a UserError.
    """
    if isinstance(requested, PrecisionChoice):
        return requested
    device = torch.device(device)
    bf16_on_cuda = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return _resolve(str(requested), device.type, purpose, bf16_on_cuda)


def autocast(device: torch.device, precision: str | PrecisionChoice):
    """The training step's context: bf16 autocast where `precision` resolves to bf16, else a no-op.

    Autocast keeps the weights, gradients and optimizer state in fp32 and runs convolutions and matrix
    products in bf16 (on the CPU and CUDA alike).
    """
    choice = resolve_precision(precision, device, "train")
    if choice.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
