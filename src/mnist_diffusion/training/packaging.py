"""Writing trained models as the package's shipped files (`mnist_diffusion/assets`, registered in `assets.py`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mnist_diffusion import assets
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.errors import UserError
from mnist_diffusion.latent import load_autoencoder, read_autoencoder


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
    weights = ckpt.model_weights(loaded)
    ae = load_autoencoder(loaded.config.latent, "cpu", str(source))
    out_dir = Path(out_dir)
    ae_path, ldm_path = out_dir / assets.PACKAGED["ldm-ae"].filename, out_dir / assets.PACKAGED["ldm"].filename
    ckpt.save_model(ae_path, ae.config, ae.net.state_dict(), info)
    cfg = replace(loaded.config, latent=replace(loaded.config.latent, autoencoder="ldm-ae"))
    if guidance is not None:
        cfg = replace(cfg, sample=replace(cfg.sample, guidance=float(guidance)))
    ckpt.save_model(ldm_path, cfg, weights, info)
    assert read_autoencoder(ae_path).sha256 == cfg.latent.autoencoder_sha256  # same weights, same name
    return ldm_path, ae_path
