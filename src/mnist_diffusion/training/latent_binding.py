"""Binding a latent-diffusion run to its autoencoder when it starts: the weights hash and the latent scale.

See `mnist_diffusion.latent` for why a latent run names its autoencoder twice (by reference and by hash) and
how the scale is used: z = scale * mean(q(z | x)), x = decode(z / scale).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from mnist_diffusion import assets
from mnist_diffusion.config import ConfigError, RunConfig
from mnist_diffusion.data import to_float, training_images
from mnist_diffusion.errors import UserError
from mnist_diffusion.latent import FrozenAutoencoder, check_shape, load_autoencoder, read_autoencoder, resolve_reference

SCALE_IMAGES = 10_000  # training images the latent scale is measured on (its std is stable far below this)


@torch.no_grad()
def measure_scale(ae: FrozenAutoencoder, images: torch.Tensor, value_range: str, batch_size: int = 500) -> float:
    """1 / std of the latents of `images` (uint8 (N, 1, 28, 28) or (N, 28, 28)), over all elements.

    Rombach et al. (2022, sec. 4.3.2) rescale latents by this one number so the diffusion sees unit variance
    whatever the autoencoder's KL weight left them at. Needs at least one image.
    """
    device = next(ae.net.parameters()).device
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(images), batch_size):
        z = ae.encode(to_float(images[start : start + batch_size], value_range).to(device)).double()
        total, total_sq, count = total + z.sum().item(), total_sq + z.pow(2).sum().item(), count + z.numel()
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if not np.isfinite(std) or std <= 0:
        raise UserError(f"The latents of {ae.path} have std {std}; this autoencoder cannot be used for diffusion.")
    return 1.0 / std


def bind_autoencoder(cfg: RunConfig, device: str | torch.device = "cpu") -> RunConfig:
    """Pin a latent run to its autoencoder before anything is written.

    A new run (empty latent.autoencoder_sha256) records the autoencoder's weights hash, and a latent.scale of
    0 is replaced by the scale measured on the run's first `SCALE_IMAGES` training images. A run that already
    names a hash (a resumed run) is checked against it. Raises a `UserError` naming the problem for a
    missing or different autoencoder, a data range or data set that differs from the autoencoder's, or a
    latent shape mismatch.
    """
    latent = cfg.latent
    if latent is None:
        return cfg
    if latent.autoencoder_sha256:
        ae = load_autoencoder(latent, device)
    else:
        ae = read_autoencoder(resolve_reference(latent.autoencoder), device)
        check_shape(latent, ae)
    if cfg.model.in_channels != latent.shape[0]:
        raise ConfigError(
            f"model.in_channels is {cfg.model.in_channels}, but the latents have {latent.shape[0]} channels "
            f"(latent.shape {list(latent.shape)}); set --set model.in_channels={latent.shape[0]}."
        )
    for key in ("dataset", "value_range"):
        mine, theirs = getattr(cfg.data, key), getattr(ae.config.data, key)
        if mine != theirs:
            raise ConfigError(
                f"data.{key} is {mine!r}, but the autoencoder {ae.path} was trained with {theirs!r}; "
                f"set --set data.{key}={theirs}."
            )
    if latent.autoencoder_sha256:
        return cfg
    scale = latent.scale
    if scale <= 0:
        images, _ = training_images(cfg.data)
        scale = measure_scale(ae, images[:SCALE_IMAGES], cfg.data.value_range)
    reference = latent.autoencoder if assets.is_packaged(latent.autoencoder, "autoencoder") else str(ae.path.resolve())
    return replace(cfg, latent=replace(latent, autoencoder=reference, autoencoder_sha256=ae.sha256, scale=scale))
