"""Which memory layout a training run keeps its feature maps in -- NCHW or channels_last (NHWC) -- and why.

`train.channels_last` is true, false, or `auto`, which picks channels_last where it was measured faster on the
CPU (docs/results.md, training suite): oneDNN's convolutions take NHWC maps as they are and re-lay NCHW ones
around every call, so in fp32 channels_last is faster for every recipe. Under bf16 autocast it pays only for the
seed's BasicUNet: the U-Nets' GroupNorm costs more on bf16 NHWC maps than the re-laying saves. On CUDA neither
layout was clearly faster (docs/results.md, gpu suite), so `auto` keeps NCHW there. The layout changes speed
only, not what a run learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_diffusion.config import RunConfig
from mnist_diffusion.precision import PrecisionChoice, resolve_precision


@dataclass(frozen=True)
class LayoutChoice:
    """channels_last: whether the network's weights and each batch are NHWC; reason: why, for logs."""

    channels_last: bool
    reason: str


def resolve_layout(cfg: RunConfig, device: torch.device, numerics: PrecisionChoice | None = None) -> LayoutChoice:
    """The layout of run `cfg` on `device`: its `train.channels_last`, with `auto` resolved from the device, the
    run's numerics (`numerics`, or what `train.precision` resolves to) and whether the network normalises with
    GroupNorm."""
    setting = cfg.train.channels_last
    if setting != "auto":
        return LayoutChoice(bool(setting), "asked for")
    if device.type != "cpu":
        return LayoutChoice(False, f"auto: NCHW on {device.type}")
    numerics = (numerics or resolve_precision(cfg.train.precision, device, "train")).precision
    if numerics == "fp32":
        return LayoutChoice(True, "auto: fp32 on the CPU, where NHWC convolutions need no re-laying")
    if cfg.model.kind == "basic_unet":
        return LayoutChoice(True, f"auto: {numerics} on the CPU, a network without GroupNorm")
    return LayoutChoice(False, f"auto: NCHW for {numerics} on the CPU, where GroupNorm is slower on NHWC maps")
