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

import hashlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import ConfigError, LatentConfig, RunConfig
from mnist_diffusion.errors import CheckpointError, UserError
from mnist_diffusion.models.autoencoder import Autoencoder

PACKAGED = {"ldm-ae": "ldm-ae.safetensors"}  # autoencoders shipped in mnist_diffusion/assets
SCALE_IMAGES = 10_000  # training images the latent scale is measured on (its std is stable far below this)


@dataclass
class FrozenAutoencoder:
    """A loaded autoencoder in eval mode: encode/decode without gradients, plus where it came from."""

    net: Autoencoder
    config: RunConfig  # the autoencoder run's own config (data range, widths, latent channels)
    sha256: str
    path: Path

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.net.latent_shape

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, c, 28, 28) in the autoencoder's data range -> posterior means (B, C, 7, 7), unscaled."""
        return self.net.encode(x)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, 7, 7) -> images (B, c, 28, 28) in the autoencoder's data range [-1, 1]."""
        return self.net.decode(z)


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the weights themselves (sorted names, dtypes, shapes, bytes), not the file.

    Files differ in their metadata (step, config, a packaged copy's card) while holding the same weights;
    hashing the tensors names the autoencoder, whatever file it sits in.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def packaged_path(name: str) -> Path:
    """The file of a packaged autoencoder ('ldm-ae')."""
    path = Path(str(resources.files("mnist_diffusion") / "assets" / PACKAGED[name]))
    if not path.is_file():
        raise UserError(f"The packaged autoencoder {name!r} is missing from {path.parent}; reinstall mnist-diffusion.")
    return path


def _packaged_with_hash(sha256: str) -> Path | None:
    for name in PACKAGED:
        try:
            path = packaged_path(name)
        except UserError:
            continue
        if sha256 and read_autoencoder(path).sha256 == sha256:
            return path
    return None


def resolve_reference(reference: str, sha256: str = "") -> Path:
    """A packaged name, run directory or file -> the autoencoder's weights file.

    A path that no longer exists falls back to a packaged autoencoder with the same weights hash (so a
    shipped model keeps working wherever it is installed); otherwise the error names the missing path.
    """
    if reference in PACKAGED and not Path(reference).exists():
        return packaged_path(reference)
    try:
        return ckpt.resolve_model_path(reference)
    except CheckpointError:
        fallback = _packaged_with_hash(sha256)
        if fallback is not None:
            return fallback
        raise CheckpointError(
            f"The autoencoder {reference!r} (latent.autoencoder) does not exist; give the run directory or "
            f"model.safetensors of an `ldm-ae` run, or a packaged name ({', '.join(PACKAGED)})."
        ) from None


def read_autoencoder(path: Path, device: str | torch.device = "cpu") -> FrozenAutoencoder:
    """Load an autoencoder checkpoint (model or training-state file) into eval mode; refuse other models."""
    loaded = ckpt.load_checkpoint(path, device)
    if loaded.config.model.kind != "autoencoder":
        raise CheckpointError(
            f"{path} holds a {loaded.config.model.kind} model (recipe {loaded.config.recipe!r}), not an "
            "autoencoder; latent.autoencoder must name an `ldm-ae` run."
        )
    weights = loaded.tensors
    if loaded.kind == "training-state":
        weights = ckpt.split_prefix(weights, "ema") or ckpt.split_prefix(weights, "model")
    net = Autoencoder(loaded.config.model).to(device)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match the autoencoder its config describes ({first}).") from None
    net.eval().requires_grad_(False)
    return FrozenAutoencoder(net, loaded.config, weights_sha256(weights), Path(path))


def load_autoencoder(latent: LatentConfig, device: str | torch.device = "cpu",
                     user: str = "This run") -> FrozenAutoencoder:
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
def measure_scale(ae: FrozenAutoencoder, images: torch.Tensor, value_range: str, batch_size: int = 500) -> float:
    """1 / std of the latents of `images` (uint8 (N, 1, 28, 28) or (N, 28, 28)), over all elements.

    Rombach et al. (2022, sec. 4.3.2) rescale latents by this one number so the diffusion sees unit variance
    whatever the autoencoder's KL weight left them at. Needs at least one image.
    """
    from mnist_diffusion.data import to_float

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
        from mnist_diffusion.training.loop import load_training_images

        images, _ = load_training_images(cfg, torch.device("cpu"))
        scale = measure_scale(ae, images[:SCALE_IMAGES], cfg.data.value_range)
    reference = latent.autoencoder if latent.autoencoder in PACKAGED else str(ae.path.resolve())
    return replace(cfg, latent=replace(latent, autoencoder=reference, autoencoder_sha256=ae.sha256, scale=scale))


@torch.no_grad()
def decode_latents(ae: FrozenAutoencoder, z: torch.Tensor, scale: float) -> torch.Tensor:
    """Scaled latents (B, C, 7, 7), as the diffusion model samples them -> images in the data range."""
    return ae.decode(z.to(next(ae.net.parameters()).dtype) / scale)


def reconstruction_psnr(images: np.ndarray, reconstructions: np.ndarray) -> float:
    """PSNR in dB of uint8 (N, 28, 28) reconstructions, from the mean squared error over the whole set."""
    err = (images.astype(np.float64) - reconstructions.astype(np.float64)) ** 2
    return float(10.0 * np.log10(255.0**2 / max(err.mean(), 1e-12)))


@torch.no_grad()
def reconstruct(ae: FrozenAutoencoder, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """uint8 (N, 28, 28) images -> their uint8 reconstructions through the posterior mean."""
    from mnist_diffusion.data import to_float, to_uint8

    vr = ae.config.data.value_range
    device = next(ae.net.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], vr).to(device)
        out.append(to_uint8(ae.decode(ae.encode(x)).float().cpu(), vr))
    return np.concatenate(out)


def package_pipeline(ldm: str | Path, out_dir: str | Path, info: dict | None = None,
                     guidance: float | None = None) -> tuple[Path, Path]:
    """Write a trained latent model and its autoencoder as a self-contained pair for shipping.

    out_dir/ldm-ae.safetensors holds the autoencoder (same weights, so the same hash) and
    out_dir/ldm.safetensors the latent model's sampling weights, its config now naming the autoencoder by its
    packaged name 'ldm-ae'. `info` (JSON-able) goes into both files' metadata (training commands, times).
    `guidance` replaces the run's default guidance scale (sample.guidance), which is best chosen by
    evaluating the trained model; None keeps the run's.
    """
    source = ckpt.resolve_model_path(ldm)
    loaded = ckpt.load_checkpoint(source)
    if loaded.config.latent is None:
        raise UserError(f"{source} is not a latent-diffusion model (its config has no latent section).")
    weights = loaded.tensors
    if loaded.kind == "training-state":
        weights = ckpt.split_prefix(weights, "ema") or ckpt.split_prefix(weights, "model")
    ae = load_autoencoder(loaded.config.latent, "cpu", str(source))
    out_dir = Path(out_dir)
    ae_path, ldm_path = out_dir / PACKAGED["ldm-ae"], out_dir / "ldm.safetensors"
    ckpt.save_model(ae_path, ae.config, ae.net.state_dict(), info)
    cfg = replace(loaded.config, latent=replace(loaded.config.latent, autoencoder="ldm-ae"))
    if guidance is not None:
        cfg = replace(cfg, sample=replace(cfg.sample, guidance=float(guidance)))
    ckpt.save_model(ldm_path, cfg, weights, info)
    assert read_autoencoder(ae_path).sha256 == cfg.latent.autoencoder_sha256  # same weights, same name
    return ldm_path, ae_path
