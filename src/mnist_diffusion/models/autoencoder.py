"""A small KL-regularised autoencoder for 28x28 images with a (C, 7, 7) latent (Rombach et al. 2022, sec. 3).

Latent diffusion trains the diffusion model on the autoencoder's latents instead of pixels: 7x7xC numbers
(196 for C = 4) in place of 784, so every sampling step is several times cheaper, and the decoder maps the
final latent back to an image once.

Layout for the default widths (32, 64, 128) -- `ModelConfig.channels` are the widths at 28, 14 and 7:

    encoder: x (B,c,28,28) -conv-> 32@28 -down-> 64@14 -res-> -down-> 128@7 -res-> norm, SiLU, conv -> (B,2C,7,7)
             = (mean, logvar) of a diagonal Gaussian posterior q(z | x)
    decoder: z (B,C,7,7) -conv-> 128@7 -res-> -up-> 64@14 -res-> -up-> 32@28 -res-> norm, SiLU, conv, tanh
             -> (B,c,28,28)

The encoder is deliberately lighter than the decoder (no residual block at 28x28): latent diffusion runs
the encoder on every training batch, while the decoder runs once per generated image and sets the quality.
`ModelConfig.blocks_per_level` residual blocks sit at each decoder level (encoder: at 14 and 7).

The decoder ends in tanh, so it models images in [-1, 1] (data.value_range 'signed'). Digits are mostly pure
black and pure white: with a linear output an L1 loss punishes overshooting those extremes as much as falling
short, so the decoder hedges just inside them and reconstructions come out grey and soft. Behind a tanh the
extremes are reached by any large enough pre-activation, and reconstructions come out sharp.

The training loss (L1 reconstruction + KL) is `training.objectives.autoencoder_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.config import ConfigError, ModelConfig
from mnist_diffusion.models.blocks import group_norm

LATENT_SIZE = 7  # 28 / 4: two stride-2 stages
LOGVAR_RANGE = (-30.0, 20.0)  # clamp as Stable Diffusion's DiagonalGaussianDistribution does, so exp() stays finite


class PlainResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice plus a skip; (B, C_in, H, W) -> (B, C_out, H, W). No time embedding."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _up(in_channels: int, out_channels: int) -> nn.Module:
    """Nearest-neighbour x2 then conv3x3 (no transposed-conv checkerboards)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1)
    )


class Autoencoder(nn.Module):
    """encode(x) -> (mean, logvar), decode(z) -> x_hat; forward(x, generator) -> (x_hat, mean, logvar).

    x: (B, in_channels, 28, 28) in [-1, 1]; mean, logvar, z: (B, latent_channels, 7, 7); x_hat in [-1, 1].
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if len(cfg.channels) != 3:
            raise ConfigError(
                f"model.channels of an autoencoder must list three widths (at 28, 14 and 7), got {list(cfg.channels)}."
            )
        if cfg.latent_channels < 1:
            raise ConfigError(f"model.latent_channels must be at least 1, got {cfg.latent_channels}.")
        w28, w14, w7 = cfg.channels
        g, n = cfg.groups, cfg.blocks_per_level
        self.in_channels = cfg.in_channels
        self.latent_channels = cfg.latent_channels
        self.num_classes = 0  # unconditional: the labels a trainer passes are ignored

        def blocks(width: int) -> list[nn.Module]:
            return [PlainResBlock(width, width, g) for _ in range(n)]

        self.encoder = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w28, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w28, w14, 3, stride=2, padding=1),
            *blocks(w14),
            nn.Conv2d(w14, w7, 3, stride=2, padding=1),
            *blocks(w7),
            group_norm(w7, g),
            nn.SiLU(),
            nn.Conv2d(w7, 2 * cfg.latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, w7, 3, padding=1),
            *blocks(w7),
            _up(w7, w14),
            *blocks(w14),
            _up(w14, w28),
            *blocks(w28),
            group_norm(w28, g),
            nn.SiLU(),
            nn.Conv2d(w28, cfg.in_channels, 3, padding=1),
        )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.latent_channels, LATENT_SIZE, LATENT_SIZE)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, c, 28, 28) -> mean, logvar of q(z | x), each (B, C, 7, 7); logvar clamped to LOGVAR_RANGE."""
        if x.shape[1:] != (self.in_channels, 28, 28):
            raise ValueError(f"the autoencoder takes ({self.in_channels}, 28, 28) images, got {tuple(x.shape[1:])}")
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, 7, 7) -> x_hat (B, c, 28, 28) in [-1, 1]."""
        if z.shape[1:] != self.latent_shape:
            raise ValueError(f"the decoder takes latents of shape {self.latent_shape}, got {tuple(z.shape[1:])}")
        return torch.tanh(self.decoder(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised pass (Kingma & Welling 2014): z = mean + exp(logvar / 2) * noise, then decode."""
        mean, logvar = self.encode(x)
        device = generator.device if generator is not None else x.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar
