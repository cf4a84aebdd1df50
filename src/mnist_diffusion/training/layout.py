"""Which memory layout a training run keeps its feature maps in -- NCHW or channels_last (NHWC) -- and why.

`train.channels_last` is true, false, or `auto`, which picks channels_last where it was measured faster on the
CPU (benchmarks/results/train_layout*.md): oneDNN's convolutions take NHWC maps as they are and re-lay NCHW
ones around every call, which in fp32 made channels_last 1.05-1.25x as fast over the five recipes on an AVX-512
EPYC (0.97-1.26x with torch's and oneDNN's kernels held to AVX2, the seed recipe gaining most). Under bf16
autocast it pays only for the seed's BasicUNet (1.36x): the U-Nets' GroupNorm costs more on bf16 NHWC maps than
the re-laying saves (0.89-0.95x). On CUDA the two were within 8% of each other either way (benchmarks/results/
cuda_throughput.md), so `auto` keeps NCHW there. The layout changes speed only: the mean loss at equal steps is
the same to four decimals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_diffusion.config import RunConfig
from mnist_diffusion.precision import resolve_precision


@dataclass(frozen=True)
class LayoutChoice:
    """channels_last: whether the network's weights and each batch are NHWC; reason: why, for logs."""

    channels_last: bool
    reason: str


def resolve_layout(cfg: RunConfig, device: torch.device) -> LayoutChoice:
    """The layout of run `cfg` on `device`: its `train.channels_last`, with `auto` resolved from the device, the
    numerics `train.precision` resolves to, and whether the network normalises with GroupNorm."""
    setting = cfg.train.channels_last
    if setting != "auto":
        return LayoutChoice(bool(setting), "asked for")
    if device.type != "cpu":
        return LayoutChoice(False, f"auto: NCHW on {device.type}")
    numerics = resolve_precision(cfg.train.precision, device, "train").precision
    if numerics == "fp32":
        return LayoutChoice(True, "auto: fp32 on the CPU, where NHWC convolutions need no re-laying")
    if cfg.model.kind == "basic_unet":
        return LayoutChoice(True, f"auto: {numerics} on the CPU, a network without GroupNorm")
    return LayoutChoice(False, f"auto: NCHW for {numerics} on the CPU, where GroupNorm is slower on NHWC maps")
