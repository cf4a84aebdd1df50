"""Writing trained models as the package's shipped files (`mnist_diffusion/assets`, registered in `assets.py`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mnist_diffusion import assets
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import RunConfig, load_run_config
from mnist_diffusion.diffusion.samplers import check_settings
from mnist_diffusion.errors import UserError
from mnist_diffusion.latent import load_autoencoder, read_autoencoder, weights_sha256


def with_sampling_defaults(cfg: RunConfig, sample: dict | None, source: Path) -> RunConfig:
    """`cfg` with the settings in `sample` (e.g. {"guidance": 1.5}) as its sampling defaults, checked as any
    config is; they are best chosen by evaluating the trained model."""
    if not sample:
        return cfg
    data = cfg.to_dict()
    data["sample"].update(sample)
    cfg = load_run_config(data, f"sample settings for {source}")
    if cfg.diffusion.kind != "autoencoder":
        check_settings(cfg.sample, cfg.diffusion.kind)
    return cfg


def package_model(
    source: str | Path,
    out_file: str | Path,
    info: dict | None = None,
    sample: dict | None = None,
    teacher: str | None = None,
    init: str | None = None,
) -> Path:
    """Write a trained model's sampling weights (EMA, where the run kept one) as one file for shipping (a latent
    model with its autoencoder: `package_pipeline`).

    `sample` (settings of the config's `sample` section, e.g. {"steps": 2, "guidance": 1.5}) replaces the run's
    sampling defaults, which are best chosen by evaluating the trained model; the result is checked as any config
    is. `teacher` renames a distilled student's teacher (a packaged name or a path) once its weights are shown to
    hash to the `distill.teacher_sha256` the student was trained against; `init` renames the model a run started
    from (`train.init`) the same way, against `train.init_sha256`. `info` joins the metadata (beside the step the
    run saved).
    """
    source = ckpt.resolve_model_path(source)
    loaded = ckpt.load_checkpoint(source)
    cfg = loaded.config
    cfg = with_sampling_defaults(cfg, sample, source)
    if teacher is not None:
        if cfg.distill is None:
            raise UserError(f"{source} is not a distilled student, so it has no teacher to rename.")
        found = weights_sha256(ckpt.model_weights(ckpt.load_checkpoint(ckpt.resolve_model_path(teacher))))
        if found != cfg.distill.teacher_sha256:
            raise UserError(
                f"{source} was distilled from the teacher whose weights hash to "
                f"{cfg.distill.teacher_sha256}, but {teacher} hashes to {found}."
            )
        cfg = replace(cfg, distill=replace(cfg.distill, teacher=str(teacher)))
    if init is not None:
        found = weights_sha256(ckpt.model_weights(ckpt.load_checkpoint(ckpt.resolve_model_path(init))))
        if not cfg.train.init or found != cfg.train.init_sha256:
            raise UserError(f"{source} did not start from the weights of {init} (they hash to {found[:12]}).")
        cfg = replace(cfg, train=replace(cfg.train, init=str(init)))
    out_file = Path(out_file)
    ckpt.save_model(out_file, cfg, ckpt.model_weights(loaded), {**loaded.info, **(info or {})})  # keeps its step
    return out_file


def package_pipeline(
    ldm: str | Path, out_dir: str | Path, info: dict | None = None, guidance: float | None = None
) -> tuple[Path, Path]:
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
    cfg = with_sampling_defaults(cfg, None if guidance is None else {"guidance": float(guidance)}, source)
    ckpt.save_model(ldm_path, cfg, weights, info)
    assert read_autoencoder(ae_path).sha256 == cfg.latent.autoencoder_sha256  # same weights, same name
    return ldm_path, ae_path
