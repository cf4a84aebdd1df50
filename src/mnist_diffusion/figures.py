"""Figures of a run, as PNG files.

The seed's four: (1) inputs and the same batch corrupted with the amount rising left to right, (2) input /
corrupted / one-shot prediction rows as the amount rises, (3) per sampling step the model input x and the
model's prediction, (4) the training-loss curve. DDPM runs add the x0-prediction per step, a guidance sweep
(rows = digits, columns = guidance scales), the schedule's SNR curve and the loss per timestep quarter.
Latent-diffusion and autoencoder runs add the autoencoder's reconstructions, the latent channels of a few
digits and a latent interpolation between two digits (autoencoder runs have no sampling figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mnist_diffusion.data import load_split, to_float, to_uint8  # noqa: E402
from mnist_diffusion.diffusion.schedule import make_schedule  # noqa: E402
from mnist_diffusion.diffusion.tutorial import corrupt  # noqa: E402
from mnist_diffusion.images import grid, save_gif  # noqa: E402
from mnist_diffusion.latent import FrozenAutoencoder, reconstruct, reconstruction_psnr  # noqa: E402
from mnist_diffusion.pipeline import Pipeline, SampleResult, load  # noqa: E402


class Trajectory:
    """A sampling callback that keeps, at every sampler step, x_t and the x0 estimate of the first `keep`
    images (uint8 (k, 28, 28) each), whatever the batch size."""

    def __init__(self, value_range: str, keep: int = 16):
        self.value_range, self.keep = value_range, keep
        self.x_t: dict[int, list[np.ndarray]] = {}
        self.x0: dict[int, list[np.ndarray]] = {}
        self.t: dict[int, float] = {}

    def __call__(self, step: dict) -> None:
        take = self.keep - step.get("start", 0)
        if take <= 0:
            return
        i = step["i"]
        self.t[i] = step["t"]
        self.x_t.setdefault(i, []).append(to_uint8(step["x_t"][:take].float().cpu(), self.value_range))
        self.x0.setdefault(i, []).append(to_uint8(step["x0"][:take].float().cpu(), self.value_range))

    def steps(self) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(t, x_t, x0) per sampler step, in order."""
        return [(self.t[i], np.concatenate(self.x_t[i]), np.concatenate(self.x0[i])) for i in sorted(self.t)]


def write_trajectory_gif(trajectory: Trajectory, result: SampleResult, path: Path, pipe: Pipeline) -> Path:
    """The denoising as an animated GIF: the running x0 estimate per step, then the final digits."""
    frames = [grid(x0, nrow=8) for _, _, x0 in trajectory.steps()]
    frames.append(grid(result.images[: trajectory.keep], nrow=8))
    return save_gif(frames, path)


def _show(ax, images_uint8: np.ndarray, title: str | None = None, nrow: int | None = None) -> None:
    ax.imshow(grid(images_uint8, nrow=nrow), cmap="Greys", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def corruption_figure(x: torch.Tensor, out: Path) -> Path:
    """Seed figure 1: a batch (in [0, 1]) and the same batch corrupted with amount = linspace(0, 1)."""
    amount = torch.linspace(0, 1, x.shape[0])
    noised = corrupt(x, amount, generator=torch.Generator().manual_seed(0))
    fig, axs = plt.subplots(2, 1, figsize=(12, 4))
    _show(axs[0], to_uint8(x, "unit"), "Input data", nrow=len(x))
    _show(axs[1], to_uint8(noised, "unit"), "Corrupted data (-- amount increases -->)", nrow=len(x))
    return _save(fig, out)


@torch.no_grad()
def one_shot_figure(model: Pipeline, x: torch.Tensor, out: Path) -> Path:
    """Seed figure 2: input / corrupted / one-shot prediction as the amount rises."""
    amount = torch.linspace(0, 1, x.shape[0])
    noised = corrupt(x, amount, generator=torch.Generator().manual_seed(0))
    pred = model.net(noised.to(model.device)).cpu()
    fig, axs = plt.subplots(3, 1, figsize=(12, 5.5))
    _show(axs[0], to_uint8(x, "unit"), "Input data", nrow=len(x))
    _show(axs[1], to_uint8(noised, "unit"), "Corrupted data (-- amount increases -->)", nrow=len(x))
    _show(axs[2], to_uint8(pred, "unit"), "Network predictions", nrow=len(x))
    return _save(fig, out)


def steps_figure(model: Pipeline, out: Path, n: int = 8, steps: int | None = None, seed: int = 0,
                 guidance: float | None = None) -> Path:
    """Per sampling step: the model input x_t (left) and the model's prediction of the clean image (right)."""
    trajectory = Trajectory(model.value_range, keep=n)
    model.sample(n, steps=steps, seed=seed, guidance=guidance, callback=trajectory)
    recorded = trajectory.steps()
    rows = len(recorded)
    fig, axs = plt.subplots(rows, 2, figsize=(9, 0.75 * rows + 0.8), squeeze=False)
    axs[0, 0].set_title("x (model input)", fontsize=9)
    axs[0, 1].set_title("model prediction", fontsize=9)
    for i, (_, x_t, x0) in enumerate(recorded):
        _show(axs[i, 0], x_t, nrow=n)
        _show(axs[i, 1], x0, nrow=n)
    return _save(fig, out)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_figure(rows: list[dict], out: Path) -> Path | None:
    """Training loss against step (and per timestep quarter where logged)."""
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    quarters = [r["loss_by_quarter"] for r in rows if "loss_by_quarter" in r]
    fig, axs = plt.subplots(1, 2 if quarters else 1, figsize=(11 if quarters else 6, 3.8), squeeze=False)
    axs[0, 0].plot(steps, [r["loss"] for r in rows])
    axs[0, 0].set(xlabel="step", ylabel="training loss", title="Training loss", yscale="log")
    if quarters:
        q = np.array(quarters)
        qsteps = [r["step"] for r in rows if "loss_by_quarter" in r]
        for j in range(q.shape[1]):
            axs[0, 1].plot(qsteps, q[:, j], label=f"t in quarter {j + 1}")
        axs[0, 1].set(xlabel="step", ylabel="loss", title="Loss per timestep quarter", yscale="log")
        axs[0, 1].legend(fontsize=8)
    return _save(fig, out)


def snr_figure(model: Pipeline, out: Path) -> Path:
    """log SNR(t) = log(alpha_bar / (1 - alpha_bar)) of the run's schedule, beside the other schedule."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    d = model.config.diffusion
    for name in ("linear", "cosine"):
        s = make_schedule(name, d.timesteps)
        ab = s.alphas_cumprod.double()
        ax.plot(torch.log(ab / (1 - ab)).numpy(), label=name + (" (this run)" if name == d.schedule else ""),
                lw=2 if name == d.schedule else 1)
    ax.set(xlabel="timestep t", ylabel="log SNR", title="Signal-to-noise ratio of the schedule")
    ax.legend()
    return _save(fig, out)


def guidance_figure(model: Pipeline, out: Path, scales=(1.0, 1.5, 2.0, 3.0, 5.0), seed: int = 0) -> Path:
    """Rows = digits 0-9, columns = guidance scales; the same starting noise in every column."""
    columns = [model.sample(10, labels="0-9", guidance=w, seed=seed).images for w in scales]
    images = np.stack(columns, axis=1).reshape(-1, 28, 28)
    fig, ax = plt.subplots(figsize=(1.0 * len(scales) + 1, 8))
    _show(ax, images, None, nrow=len(scales))
    ax.set_xticks([30 * i + 16 for i in range(len(scales))])
    ax.set_xticklabels([f"w={w:g}" for w in scales])
    ax.set_title("Guidance sweep (rows: digits 0-9)", fontsize=9)
    return _save(fig, out)


def _autoencoder_of(model: Pipeline):
    """(FrozenAutoencoder, scale) for a latent run (its own scale) or an autoencoder run (scale 1)."""
    if model.config.model.kind == "autoencoder":
        return FrozenAutoencoder(model.net, model.config, "", model.path), 1.0
    return model.autoencoder, model.config.latent.scale


def reconstruction_figure(ae, images: np.ndarray, out: Path) -> Path:
    """Test digits (top) and the autoencoder's reconstructions through the posterior mean (bottom), with PSNR."""
    rec = reconstruct(ae, images)
    fig, axs = plt.subplots(2, 1, figsize=(12, 2.4))
    _show(axs[0], images, "Test digits", nrow=len(images))
    _show(axs[1], rec, f"Reconstructions (PSNR {reconstruction_psnr(images, rec):.1f} dB)", nrow=len(images))
    return _save(fig, out)


def latent_channels_figure(ae, images: np.ndarray, scale: float, out: Path) -> Path:
    """Per digit (row): the image, then each channel of its latent (x scale) as a 7x7 map, one colour scale."""
    z = ae.encode(to_float(images, ae.config.data.value_range)).cpu() * scale
    rows, channels = z.shape[0], z.shape[1]
    lim = float(z.abs().max())
    fig, axs = plt.subplots(rows, channels + 1, figsize=(1.3 * (channels + 1) + 0.8, 1.3 * rows), squeeze=False)
    for r in range(rows):
        axs[r, 0].imshow(images[r], cmap="Greys", vmin=0, vmax=255)
        for c in range(channels):
            im = axs[r, c + 1].imshow(z[r, c].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            if r == 0:
                axs[r, c + 1].set_title(f"channel {c}", fontsize=8)
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axs, shrink=0.6, label="latent value" + (" (scaled)" if scale != 1.0 else ""))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def interpolation_figure(ae, a: np.ndarray, b: np.ndarray, out: Path, n: int = 10) -> Path:
    """Two digits blended in latent space (decoded, top) and in pixel space (bottom), n steps from a to b."""
    vr = ae.config.data.value_range
    x = to_float(np.stack([a, b]), vr)
    za, zb = ae.encode(x).cpu()
    w = torch.linspace(0, 1, n)[:, None, None, None]
    latent_rows = to_uint8(ae.decode((1 - w) * za + w * zb).float(), vr)
    pixel_rows = to_uint8((1 - w) * x[0] + w * x[1], vr)
    fig, axs = plt.subplots(2, 1, figsize=(10, 2.6))
    _show(axs[0], latent_rows, "Interpolation in latent space (decoded)", nrow=n)
    _show(axs[1], pixel_rows, "Interpolation in pixel space", nrow=n)
    return _save(fig, out)


def autoencoder_figures(model: Pipeline, out_dir: Path) -> list[Path]:
    """The autoencoder's reconstructions, latent channels and a latent interpolation, on test digits."""
    ae, scale = _autoencoder_of(model)
    images, labels = load_split(model.config.data.dataset, "test", model.config.data.data_dir)
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]  # one of each digit
    return [
        reconstruction_figure(ae, images[:16], out_dir / "autoencoder_reconstructions.png"),
        latent_channels_figure(ae, images[first[:6]], scale, out_dir / "latent_channels.png"),
        interpolation_figure(ae, images[first[1]], images[first[8]], out_dir / "latent_interpolation.png"),
    ]


def write_figures(run_dir: Path, out_dir: Path | None = None, seed: int = 0) -> list[Path]:
    """Every figure that applies to the run in `run_dir`; returns the written paths."""
    run_dir = Path(run_dir)
    model = load(run_dir)
    out_dir = Path(out_dir or run_dir / "figures")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cfg = model.config
    if cfg.diffusion.kind == "tutorial":
        images, _ = load_split(cfg.data.dataset, "test", cfg.data.data_dir)
        x = to_float(images[:8], "unit")
        written.append(corruption_figure(x, out_dir / "1_corruption.png"))
        written.append(one_shot_figure(model, x, out_dir / "2_one_shot_denoising.png"))
        written.append(steps_figure(model, out_dir / "3_sampling_steps.png", seed=seed))
    elif cfg.model.kind == "autoencoder":
        written.extend(autoencoder_figures(model, out_dir))
    else:
        written.append(steps_figure(model, out_dir / "x0_prediction_per_step.png", steps=10, seed=seed))
        written.append(snr_figure(model, out_dir / "snr.png"))
        if cfg.model.num_classes:
            written.append(guidance_figure(model, out_dir / "guidance_sweep.png", seed=seed))
        if cfg.latent is not None:
            written.extend(autoencoder_figures(model, out_dir))
    loss = loss_figure(read_metrics(run_dir), out_dir / "loss.png")
    if loss:
        written.append(loss)
    return written

