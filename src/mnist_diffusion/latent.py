"""The frozen autoencoder of latent diffusion (Rombach et al. 2022): finding it, pinning it, and its latents.

A latent-diffusion run is only meaningful with the exact autoencoder it was trained on, so its config
(`LatentConfig`) names that autoencoder twice: by reference (`autoencoder`: a run directory, a checkpoint file
or a packaged name such as 'ldm-ae') and by the sha256 of its weights (`autoencoder_sha256`). Any other
autoencoder is refused. The latent scale (Stable Diffusion's "scale factor") is 1 / std of the autoencoder's
latents over the run's training images, measured when the run starts and kept in the same config:

    z = scale * mean(q(z | x))        what the diffusion model sees, std ~ 1
    x = decode(z / scale)             back to pixels after sampling

The encoder's posterior mean is used, not a sample from it: with the small KL weight the posterior is narrow,
and a deterministic encoding makes the scale and the training targets reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_diffusion import assets, runtime
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.checkpoint import weights_sha256
from mnist_diffusion.config import ConfigError, LatentConfig, RunConfig
from mnist_diffusion.data import to_float, to_uint8
from mnist_diffusion.errors import CheckpointError
from mnist_diffusion.models.autoencoder import Autoencoder
from mnist_diffusion.precision import PrecisionChoice


class _PosteriorMean(nn.Module):
    """An autoencoder's encoder as a network of its own: images -> posterior means (what `runtime.wrap` wraps)."""

    def __init__(self, net: Autoencoder):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.encode(x)[0]


class _Decoder(nn.Module):
    """An autoencoder's decoder as a network of its own: latents -> images (what `runtime.wrap` wraps)."""

    def __init__(self, net: Autoencoder):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.decode(z)


@dataclass
class FrozenAutoencoder:
    """A loaded autoencoder in eval mode: encode/decode without gradients, plus where it came from.

    `run_in(precision)` picks the numerics of encode and decode, through the same wrapper as a sampling network
    (`runtime.wrap`): in bf16 the weights are cast to bf16 and encode and decode still take and return fp32.
    """

    net: Autoencoder
    config: RunConfig  # the autoencoder run's own config (data range, widths, latent channels)
    sha256: str
    path: Path
    _coders: tuple[nn.Module, nn.Module] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.net.latent_shape

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def run_in(self, precision: PrecisionChoice) -> FrozenAutoencoder:
        """Encode and decode in `precision` from now on (bf16 casts the weights to bf16 in place); returns self."""
        self._coders = (runtime.wrap(_PosteriorMean(self.net), precision), runtime.wrap(_Decoder(self.net), precision))
        return self

    def _encoder_decoder(self) -> tuple[nn.Module, nn.Module]:
        if self._coders is None:
            self.run_in(PrecisionChoice("fp32", "as loaded"))
        return self._coders

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, c, 28, 28) in the autoencoder's data range -> posterior means (B, C, 7, 7), unscaled, fp32."""
        return self._encoder_decoder()[0](x.float())

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, 7, 7) -> images (B, c, 28, 28) in the autoencoder's data range [-1, 1], fp32."""
        return self._encoder_decoder()[1](z.float())

    def to(self, device: str | torch.device) -> FrozenAutoencoder:
        self.net.to(device)
        return self


def resolve_reference(reference: str, sha256: str = "") -> Path:
    """A packaged name, run directory or file -> the autoencoder's weights file.

    A path that no longer exists falls back to a packaged autoencoder with the same weights hash (so a
    shipped model keeps working wherever it is installed); otherwise the error names the missing path.
    """
    if assets.is_packaged(reference) and not Path(reference).exists():
        return assets.packaged_path(reference, "autoencoder")
    try:
        return ckpt.resolve_model_path(reference)
    except CheckpointError:
        for name in assets.names("autoencoder"):  # a file moved or deleted: a packaged one with the same weights
            path = assets.packaged_path(name)
            if sha256 and read_autoencoder(path).sha256 == sha256:
                return path
        raise CheckpointError(
            f"The autoencoder {reference!r} (latent.autoencoder) does not exist; give the run directory or "
            f"model.safetensors of an `ldm-ae` run, or a packaged name ({', '.join(assets.names('autoencoder'))})."
        ) from None


def read_autoencoder(path: Path, device: str | torch.device = "cpu") -> FrozenAutoencoder:
    """Load an autoencoder checkpoint (model or training-state file) into eval mode; refuse other models."""
    loaded = ckpt.load_checkpoint(path, device)
    if loaded.config.model.kind != "autoencoder":
        raise CheckpointError(
            f"{path} holds a {loaded.config.model.kind} model (recipe {loaded.config.recipe!r}), not an "
            "autoencoder; latent.autoencoder must name an `ldm-ae` run."
        )
    weights = ckpt.model_weights(loaded)
    net = ckpt.load_weights(Autoencoder(loaded.config.model).to(device), weights, path)
    net.eval().requires_grad_(False)
    return FrozenAutoencoder(net, loaded.config, weights_sha256(weights), Path(path))


def load_autoencoder(
    latent: LatentConfig, device: str | torch.device = "cpu", user: str = "This run"
) -> FrozenAutoencoder:
    """The autoencoder a latent config names, checked against its recorded hash and latent shape.

    `user` names the run or checkpoint in error messages.
    """
    if not latent.autoencoder_sha256:
        raise CheckpointError(
            f"{user} names no autoencoder hash (latent.autoencoder_sha256 is empty); latent runs record it when "
            "training starts, so train it with `mnist-diffusion train`."
        )
    ae = read_autoencoder(resolve_reference(latent.autoencoder, latent.autoencoder_sha256), device)
    if ae.sha256 != latent.autoencoder_sha256:
        raise CheckpointError(
            f"{user} was trained with the autoencoder whose weights hash to {latent.autoencoder_sha256}, but "
            f"{ae.path} hashes to {ae.sha256}; point latent.autoencoder at the autoencoder it was trained with."
        )
    check_shape(latent, ae)
    if latent.scale <= 0:
        raise ConfigError(f"{user} has latent.scale {latent.scale}; it must be positive (0 is only for a new run).")
    return ae


def check_shape(latent: LatentConfig, ae: FrozenAutoencoder) -> None:
    if tuple(latent.shape) != ae.latent_shape:
        raise ConfigError(
            f"latent.shape is {list(latent.shape)}, but the autoencoder {ae.path} makes latents of shape "
            f"{list(ae.latent_shape)}; set --set latent.shape={list(ae.latent_shape)} "
            f"--set model.in_channels={ae.latent_shape[0]}."
        )


@torch.no_grad()
def encode_latents(ae: FrozenAutoencoder, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Images (B, c, 28, 28) in the data range -> scaled latents (B, C, 7, 7), as the diffusion model sees them."""
    return ae.encode(x) * scale


@torch.no_grad()
def decode_latents(ae: FrozenAutoencoder, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled latents (B, C, 7, 7), as the diffusion model samples them -> images in the data range."""
    return ae.decode(z / scale)


def reconstruction_psnr(images: np.ndarray, reconstructions: np.ndarray) -> float:
    """PSNR in dB of uint8 (N, 28, 28) reconstructions, from the mean squared error over the whole set."""
    err = (images.astype(np.float64) - reconstructions.astype(np.float64)) ** 2
    return float(10.0 * np.log10(255.0**2 / max(err.mean(), 1e-12)))


@torch.no_grad()
def reconstruct(ae: FrozenAutoencoder, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """uint8 (N, 28, 28) images -> their uint8 reconstructions through the posterior mean."""
    vr = ae.config.data.value_range
    device = next(ae.net.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], vr).to(device)
        out.append(to_uint8(ae.decode(ae.encode(x)).cpu(), vr))
    return np.concatenate(out)
