"""Networks: shapes in, same shape out. They know nothing of noise schedules, samplers or losses."""

from __future__ import annotations

from torch import nn

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.autoencoder import Autoencoder
from mnist_diffusion.models.basic_unet import BasicUNet
from mnist_diffusion.models.unet import UNet

__all__ = ["Autoencoder", "BasicUNet", "UNet", "build_model", "count_parameters"]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network a model config describes (weights freshly initialised)."""
    if cfg.kind == "basic_unet":
        return BasicUNet(cfg.in_channels, cfg.in_channels)
    if cfg.kind == "autoencoder":
        return Autoencoder(cfg)
    return UNet(cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
