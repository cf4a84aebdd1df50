"""The space a sampler works in: pixels, or an autoencoder's latents (Rombach et al. 2022).

Both offer the same four things, so the pipeline never asks which it has: the shape of a sample, `decode`
(samples -> images in the data range), `encode` (images -> samples) and `known_region` (a known part of an image
and its pixel mask -> the same in the sampler's space, for inpainting by replacement).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_diffusion.config import RunConfig
from mnist_diffusion.latent import FrozenAutoencoder, decode_latents, encode_latents, load_autoencoder
from mnist_diffusion.precision import PrecisionChoice


class PixelSpace:
    """Samples are images (C, 28, 28) in the data range; decoding and encoding change nothing."""

    autoencoder = None

    def __init__(self, config: RunConfig):
        self.shape = (config.model.in_channels, 28, 28)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def known_region(self, known: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return known, mask

    def to(self, device: torch.device) -> PixelSpace:
        return self


class LatentSpace:
    """Samples are scaled latents (C, 7, 7) of the autoencoder the model was trained on, which is loaded (and
    hash-checked) on first use and run at the pipeline's precision."""

    def __init__(
        self,
        config: RunConfig,
        device: torch.device,
        precision: PrecisionChoice,
        user: str,
        autoencoder: FrozenAutoencoder | None = None,
    ):
        self.latent, self.shape = config.latent, tuple(config.latent.shape)
        self.background = -1.0 if config.data.value_range == "signed" else 0.0
        self.device, self.precision, self.user = device, precision, user
        self._autoencoder = autoencoder

    @property
    def autoencoder(self) -> FrozenAutoencoder:
        if self._autoencoder is None:
            self._autoencoder = load_autoencoder(self.latent, self.device, self.user).run_in(self.precision)
        return self._autoencoder

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode_latents(self.autoencoder, z, self.latent.scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return encode_latents(self.autoencoder, x, self.latent.scale)

    def known_region(self, known: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The known pixels (the rest background) encoded, and the latent cells whose pixels are all known."""
        z_known = self.encode(mask * known + (1 - mask) * self.background)
        z_mask = -F.max_pool2d(-mask, kernel_size=known.shape[-1] // z_known.shape[-1])
        return z_known, z_mask

    def to(self, device: torch.device) -> LatentSpace:
        self.device = device
        if self._autoencoder is not None:
            self._autoencoder.to(device)
        return self


def make_space(
    config: RunConfig,
    device: torch.device,
    precision: PrecisionChoice,
    path: Path | None,
    name: str,
    autoencoder: FrozenAutoencoder | None = None,
) -> PixelSpace | LatentSpace:
    """The space a model samples in: latents when its config names an autoencoder, else pixels."""
    if config.latent is None:
        return PixelSpace(config)
    return LatentSpace(config, device, precision, str(path or name), autoencoder)
