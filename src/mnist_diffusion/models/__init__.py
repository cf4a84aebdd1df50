"""Networks: shapes in, same shape out. They know nothing of noise schedules or samplers."""

from __future__ import annotations

from torch import nn

from mnist_diffusion.config import ModelConfig


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network a model config describes (weights freshly initialised)."""
    if cfg.kind == "basic_unet":
        from mnist_diffusion.models.basic_unet import BasicUNet

        return BasicUNet(cfg.in_channels, cfg.in_channels)
    if cfg.kind == "autoencoder":
        from mnist_diffusion.models.autoencoder import Autoencoder

        return Autoencoder(cfg)
    if cfg.kind == "latent_unet":
        from mnist_diffusion.models.latent_unet import LatentUNet

        return LatentUNet(cfg)
    from mnist_diffusion.models.unet import UNet

    return UNet(cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
