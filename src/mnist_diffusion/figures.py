"""Figures of a model or a run, as PNG files (matplotlib); the denoising GIF is `trajectory.py` (Pillow only).

The seed's four: (1) inputs and the same batch corrupted with the amount rising left to right, (2) input /
corrupted / one-shot prediction rows as the amount rises, (3) per sampling step the model input x and the
model's prediction, (4) the training-loss curve. DDPM models add the forward process q(x_t | x_0) at several t,
x_t and the x0 estimate per sampler step, a guidance sweep (rows = digits, columns = guidance scales), the
schedule's SNR curve, the loss per timestep quarter and KID over training where it was logged. Latent models
and autoencoders add reconstructions, the latent channels of a few digits and a latent interpolation.

Every digit is drawn white on black (MNIST's own convention, as the sample grids); every grid has row and
column labels and every figure a caption line naming what made it (model, sampler, steps, guidance, seed).
"""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from mnist_diffusion import runtime
from mnist_diffusion.data import load_split, to_float, to_uint8
from mnist_diffusion.diffusion.schedule import NoiseSchedule, make_schedule
from mnist_diffusion.diffusion.tutorial import corrupt
from mnist_diffusion.files import atomic_write
from mnist_diffusion.images import caption
from mnist_diffusion.latent import FrozenAutoencoder, reconstruct, reconstruction_psnr
from mnist_diffusion.pipeline import Pipeline, SampleResult, load
from mnist_diffusion.trajectory import Trajectory, shown_columns, write_trajectory_gif  # noqa: F401 - re-exported

DIGITS = "gray"  # the colour map of every digit image: 0 black, 255 white
DPI = 100
SEPARATOR = 70  # grey between the cells of a digit grid, so black backgrounds do not run together


# ---- captions and labelled grids ------------------------------------------------------------------------------
def show_grid(
    ax,
    images: np.ndarray,
    row_labels=None,
    col_labels=None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> None:
    """uint8 digits (R, C, 28, 28) as one white-on-black grid on `ax`, a label at each row and column centre."""
    images = np.asarray(images)
    rows, cols, h, w = images.shape
    canvas = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2), SEPARATOR, np.uint8)
    for r in range(rows):
        for c in range(cols):
            canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + c * (w + 2) : 2 + c * (w + 2) + w] = images[r, c]
    ax.imshow(canvas, cmap=DIGITS, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([2 + c * (w + 2) + w / 2 - 0.5 for c in range(cols)] if col_labels is not None else [])
    ax.set_yticks([2 + r * (h + 2) + h / 2 - 0.5 for r in range(rows)] if row_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels([str(c) for c in col_labels], fontsize=8)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
    if row_labels is not None:
        ax.set_yticklabels([str(r) for r in row_labels], fontsize=8)
    ax.tick_params(length=0, pad=2)
    for side in ax.spines.values():
        side.set_visible(False)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10, pad=4 if col_labels is None else 18)


def save_figure(fig, path: Path, text: str | None = None) -> Path:
    """Lay out `fig` with the caption line `text` along its bottom edge, write it as PNG and close it."""
    width, height = fig.get_size_inches()
    lines = textwrap.wrap(text, max(30, int(width * 15))) if text else []
    if lines:
        fig.text(0.01, 0.005, "\n".join(lines), ha="left", va="bottom", fontsize=8, color="0.25")
    top = 1 - 0.35 / height if fig._suptitle is not None else 1
    fig.tight_layout(rect=(0, (0.05 + 0.15 * len(lines)) / height, 1, top))
    return write_png(fig, path)


def write_png(fig, path: Path) -> Path:
    """Write `fig` as a PNG of 64 colours (digits are grey, so nothing is lost and the file is much smaller) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    plt.close(fig)
    image = Image.open(buffer).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", optimize=True))


def _digit_panel(
    images: np.ndarray,
    path: Path,
    row_labels,
    col_labels,
    title: str,
    text: str,
    xlabel: str | None = None,
    ylabel: str | None = None,
    cell: float = 0.62,
) -> Path:
    """One labelled digit grid as a whole figure."""
    rows, cols = images.shape[:2]
    fig, ax = plt.subplots(figsize=(cell * cols + 1.4, cell * rows + 1.6))
    fig.suptitle(title, fontsize=10)
    show_grid(ax, images, row_labels, col_labels, None, xlabel, ylabel)
    return save_figure(fig, path, text)


# ---- the seed's figures ----------------------------------------------------------------------------------------
def corruption_figure(x: torch.Tensor, out: Path) -> Path:
    """Seed figure 1: a batch (in [0, 1]) and the same batch corrupted with amount = linspace(0, 1)."""
    amount = torch.linspace(0, 1, x.shape[0])
    noised = corrupt(x, amount, generator=torch.Generator().manual_seed(0))
    images = np.stack([to_uint8(x, "unit"), to_uint8(noised, "unit")])
    return _digit_panel(
        images,
        out,
        ["input", "corrupted"],
        [f"{a:.2f}" for a in amount.tolist()],
        "corrupt(x, amount): the amount rises left to right",
        "x (1 - amount) + amount * U[0, 1) noise; test digits, noise seed 0",
        xlabel="amount",
    )


@torch.no_grad()
def one_shot_figure(model: Pipeline, x: torch.Tensor, out: Path) -> Path:
    """Seed figure 2: input / corrupted / one-shot prediction as the amount rises."""
    amount = torch.linspace(0, 1, x.shape[0])
    noised = corrupt(x, amount, generator=torch.Generator().manual_seed(0))
    pred = runtime.wrap(model.net, model.precision)(noised.to(model.device)).float().cpu()
    images = np.stack([to_uint8(x, "unit"), to_uint8(noised, "unit"), to_uint8(pred, "unit")])
    return _digit_panel(
        images,
        out,
        ["input", "corrupted", "prediction"],
        [f"{a:.2f}" for a in amount.tolist()],
        "One-shot denoising: one network call per image",
        f"model {model.name}; amount as column header; the prediction fails as the amount nears 1",
        xlabel="amount",
    )


def steps_figure(
    model: Pipeline,
    out: Path,
    n: int = 8,
    steps: int | None = None,
    seed: int = 0,
    guidance: float | None = None,
    progress: bool = False,
) -> Path:
    """Per sampler step (rows): the model input x_t (left) and the model's estimate of the clean image (right);
    a conditional model draws one image per digit 0-9."""
    n = 10 if model.num_classes else n
    trajectory = Trajectory(model.value_range, keep=n)
    result = model.sample(n, steps=steps, seed=seed, guidance=guidance, callback=trajectory, progress=progress)
    return trajectory_figure(trajectory, result, out, model)


def trajectory_figure(trajectory: Trajectory, result: SampleResult, out: Path, model: Pipeline) -> Path:
    """The steps a `Trajectory` recorded while `model` drew `result`: x_t and the x0 estimate per step (rows,
    labelled with the step index, t and the noise level), one column per kept image, with the caption."""
    recorded = trajectory.steps()
    k = min(trajectory.keep, len(result))
    labels = result.labels[:k] if result.labels is not None else None
    headers = [str(d) for d in labels] if labels is not None else [f"#{i}" for i in range(k)]
    if model.config.diffusion.kind == "tutorial":
        rows = [f"{i} (amount {t:.2f})" for i, (t, _, _) in enumerate(recorded)]
        names = ("x (model input)", "model prediction")
    else:
        schedule = make_schedule(model.config.diffusion.schedule, model.config.diffusion.timesteps)
        rows = [
            f"{i}: t={t:g}, sigma={float(schedule.sigma(torch.tensor(float(t)))):.2g}"
            for i, (t, _, _) in enumerate(recorded)
        ]
        names = ("x_t (model input)", "x0 estimate")
    fig, axs = plt.subplots(1, 2, figsize=(2 * 0.5 * k + 3.2, 0.5 * len(recorded) + 1.4))
    show_grid(axs[0], np.stack([x_t for _, x_t, _ in recorded]), rows, headers, names[0], ylabel="step")
    show_grid(axs[1], np.stack([x0 for _, _, x0 in recorded]), None, headers, names[1])
    return save_figure(fig, out, caption(result.settings))


# ---- DDPM figures ------------------------------------------------------------------------------------------------
def forward_process_images(
    schedule: NoiseSchedule, x0: torch.Tensor, ts, value_range: str = "signed", seed: int = 0
) -> np.ndarray:
    """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I) for each image (rows) and t (columns),
    one noise draw per image shared by all t; uint8 (B, len(ts), 28, 28)."""
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    cols = [
        to_uint8(
            schedule.q_sample(x0, int(t), eps).clamp(-1, 1)
            if value_range == "signed"
            else schedule.q_sample(x0, int(t), eps),
            value_range,
        )
        for t in ts
    ]
    return np.stack(cols, axis=1)


def forward_process_figure(
    schedule: NoiseSchedule,
    images: np.ndarray,
    out: Path,
    ts=None,
    labels=None,
    value_range: str = "signed",
    name: str = "",
) -> Path:
    """The forward process at several t: rows = test digits, columns = t with sqrt(alpha_bar_t) and SNR."""
    T = schedule.timesteps
    ts = ts if ts is not None else [0, T // 20, T // 10, T // 5, 3 * T // 10, T // 2, 7 * T // 10, T - 1]
    x0 = to_float(images, value_range)
    grid_images = forward_process_images(schedule, x0, ts, value_range)
    headers = [f"t={t}\n{float(schedule.alpha_bar(int(t)).sqrt()):.2f}" for t in ts]
    rows = [f"digit {d}" for d in labels] if labels is not None else [f"#{i}" for i in range(len(images))]
    return _digit_panel(
        grid_images,
        out,
        rows,
        headers,
        "Forward process q(x_t | x_0)",
        f"x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps; under each t: sqrt(alpha_bar_t); "
        f"{name + ' ' if name else ''}schedule, T = {T}, one eps per row",
        xlabel="timestep t",
        cell=0.75,
    )


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_figure(rows: list[dict], out: Path, name: str = "", source: str = "metrics.jsonl") -> Path | None:
    """Training loss against step, with a marker per logged point (and per timestep quarter where logged);
    rows as metrics.jsonl holds them ({'step', 'loss'[, 'loss_by_quarter']})."""
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    quarters = [r["loss_by_quarter"] for r in rows if "loss_by_quarter" in r]
    fig, axs = plt.subplots(1, 2 if quarters else 1, figsize=(10 if quarters else 5.5, 3.6), squeeze=False)
    axs[0, 0].plot(steps, [r["loss"] for r in rows], "o-", ms=3, lw=1)
    axs[0, 0].set(xlabel="training step", ylabel="loss (mean per logged point)", title="Training loss", yscale="log")
    if quarters:
        q = np.array(quarters)
        qsteps = [r["step"] for r in rows if "loss_by_quarter" in r]
        for j in range(q.shape[1]):
            axs[0, 1].plot(qsteps, q[:, j], "o-", ms=3, lw=1, label=f"t in quarter {j + 1} of T")
        axs[0, 1].set(xlabel="training step", ylabel="loss", title="Loss per timestep quarter", yscale="log")
        axs[0, 1].legend(fontsize=8)
    for ax in axs.flat:
        ax.grid(alpha=0.3)
    return save_figure(
        fig, out, f"{name + ': ' if name else ''}{len(rows)} logged points, steps {steps[0]}-{steps[-1]}; from {source}"
    )


def kid_figure(rows: list[dict], out: Path, name: str = "") -> Path | None:
    """KID (x 1000, with its standard deviation over subsets) and label accuracy over training, where logged."""
    rows = [r for r in rows if isinstance(r.get("eval"), dict) and "kid_mean" in r["eval"]]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    kid = np.array([r["eval"]["kid_mean"] for r in rows]) * 1000
    std = np.array([r["eval"].get("kid_std", 0.0) for r in rows]) * 1000
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(steps, kid, yerr=std, fmt="o-", ms=4, lw=1, capsize=3, label="KID x 1000")
    ax.set(xlabel="training step", ylabel="KID x 1000 (lower is better)", title="KID over training")
    ax.grid(alpha=0.3)
    accuracy = [r["eval"].get("label_accuracy") for r in rows]
    if all(a is not None for a in accuracy):
        twin = ax.twinx()
        twin.plot(steps, np.array(accuracy) * 100, "s--", ms=4, lw=1, color="tab:green", label="label accuracy")
        twin.set_ylabel("label accuracy (%)", color="tab:green")
    n = rows[-1]["eval"].get("n", "?")
    return save_figure(
        fig, out, f"{name + ': ' if name else ''}in-training check, {n} samples each, against the MNIST test set"
    )


def snr_figure(model: Pipeline, out: Path) -> Path:
    """log SNR(t) = log(alpha_bar / (1 - alpha_bar)) of the model's schedule, beside the other schedule."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    d = model.config.diffusion
    for name in ("linear", "cosine"):
        s = make_schedule(name, d.timesteps)
        ab = s.alphas_cumprod.double()
        ax.plot(
            torch.log(ab / (1 - ab)).numpy(),
            label=name + (" (this model)" if name == d.schedule else ""),
            lw=2 if name == d.schedule else 1,
        )
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set(
        xlabel="timestep t",
        ylabel="log SNR = log(alpha_bar / (1 - alpha_bar))",
        title="Signal-to-noise ratio of the schedule",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out, f"model {model.name}, T = {d.timesteps}; above 0 signal dominates")


def guidance_figure(
    model: Pipeline,
    out: Path,
    scales=(1.0, 1.5, 2.0, 3.0, 5.0),
    seed: int = 0,
    steps: int | None = None,
    progress: bool = False,
) -> Path:
    """Rows = digits 0-9, columns = guidance scales; the same starting noise in every column."""
    results = [model.sample(10, labels="0-9", guidance=w, seed=seed, steps=steps, progress=progress) for w in scales]
    images = np.stack([r.images for r in results], axis=1)
    text = caption(results[0].settings, guidance="guidance as headed")
    return _digit_panel(
        images,
        out,
        [str(d) for d in range(10)],
        [f"w={w:g}" for w in scales],
        "Guidance sweep",
        text + "; the same noise in a row",
        xlabel="guidance scale w",
        ylabel="digit asked for",
        cell=0.75,
    )


# ---- latent figures ----------------------------------------------------------------------------------------------
def _autoencoder_of(model: Pipeline):
    """(FrozenAutoencoder, scale) for a latent model (its own scale) or an autoencoder (scale 1)."""
    if model.config.model.kind == "autoencoder":
        return FrozenAutoencoder(model.net, model.config, "", model.path), 1.0
    return model.autoencoder, model.config.latent.scale


def reconstruction_figure(ae, images: np.ndarray, out: Path, labels=None, name: str = "") -> Path:
    """Test digits (top) and the autoencoder's reconstructions through the posterior mean (bottom), with PSNR."""
    rec = reconstruct(ae, images)
    headers = [str(d) for d in labels] if labels is not None else [f"#{i}" for i in range(len(images))]
    shape = "x".join(str(s) for s in ae.latent_shape)
    return _digit_panel(
        np.stack([images, rec]),
        out,
        ["test digit", "reconstruction"],
        headers,
        f"Autoencoder reconstructions (PSNR {reconstruction_psnr(images, rec):.1f} dB)",
        f"{name + ': ' if name else ''}28x28 pixels -> {shape} latent -> 28x28; posterior mean",
        xlabel="test digit's label",
    )


def latent_channels_figure(ae, images: np.ndarray, scale: float, out: Path, labels=None, name: str = "") -> Path:
    """Per digit (row): the image, then each channel of its latent (x scale) as a 7x7 map, one colour scale."""
    z = ae.encode(to_float(images, ae.config.data.value_range)).cpu() * scale
    rows, channels = z.shape[0], z.shape[1]
    lim = float(z.abs().max())
    fig, axs = plt.subplots(rows, channels + 1, figsize=(1.1 * (channels + 1) + 1.2, 1.1 * rows + 0.9), squeeze=False)
    for r in range(rows):
        axs[r, 0].imshow(images[r], cmap=DIGITS, vmin=0, vmax=255)
        axs[r, 0].set_ylabel(f"digit {labels[r]}" if labels is not None else f"#{r}", fontsize=8)
        for c in range(channels):
            im = axs[r, c + 1].imshow(z[r, c].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    axs[0, 0].set_title("image", fontsize=8)
    for c in range(channels):
        axs[0, c + 1].set_title(f"channel {c}", fontsize=8)
    for ax in axs.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axs, shrink=0.6, label="latent value" + (" (scaled)" if scale != 1.0 else ""))
    fig.text(
        0.01,
        0.005,
        f"{name + ': ' if name else ''}each digit's {channels}x{z.shape[2]}x{z.shape[3]} latent, "
        f"one 7x7 map per channel",
        fontsize=8,
        color="0.25",
    )
    return write_png(fig, out)


def interpolation_figure(ae, a: np.ndarray, b: np.ndarray, out: Path, n: int = 10, name: str = "") -> Path:
    """Two digits blended in latent space (decoded, top) and in pixel space (bottom), n steps from a to b."""
    vr = ae.config.data.value_range
    x = to_float(np.stack([a, b]), vr)
    za, zb = ae.encode(x).cpu()
    w = torch.linspace(0, 1, n)[:, None, None, None]
    latent_rows = to_uint8(ae.decode((1 - w) * za + w * zb).float(), vr)
    pixel_rows = to_uint8((1 - w) * x[0] + w * x[1], vr)
    return _digit_panel(
        np.stack([latent_rows, pixel_rows]),
        out,
        ["latent (decoded)", "pixels"],
        [f"{v:.2f}" for v in w.flatten().tolist()],
        "Interpolation from one digit to another",
        f"{name + ': ' if name else ''}(1 - lambda) a + lambda b, blended in the latent (top) or in pixels (bottom)",
        xlabel="lambda",
        cell=0.7,
    )


def autoencoder_figures(model: Pipeline, out_dir: Path) -> list[Path]:
    """The autoencoder's reconstructions, latent channels and a latent interpolation, on test digits."""
    ae, scale = _autoencoder_of(model)
    images, labels = load_split(model.config.data.dataset, "test", model.config.data.data_dir)
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]  # one of each digit
    return [
        reconstruction_figure(
            ae, images[first], out_dir / "autoencoder_reconstructions.png", list(range(10)), model.name
        ),
        latent_channels_figure(
            ae, images[first[:6]], scale, out_dir / "latent_channels.png", list(range(6)), model.name
        ),
        interpolation_figure(
            ae, images[first[1]], images[first[8]], out_dir / "latent_interpolation.png", name=model.name
        ),
    ]


# ---- everything that applies -------------------------------------------------------------------------------------
def default_out_dir(source: str | Path) -> Path:
    """RUN_DIR/figures for a run directory, FILE's folder/figures for a model file, ./figures-NAME for a
    packaged model."""
    p = Path(source)
    if p.is_dir():
        return p / "figures"
    if p.is_file():
        return p.parent / "figures"
    return Path(f"figures-{source}")


def write_figures(
    source: str | Path, out_dir: Path | None = None, seed: int = 0, device: str = "cpu", progress: bool = False
) -> list[Path]:
    """Every figure that applies to a run directory, a model file or a packaged model (a name in
    `assets.PACKAGED`); returns the written paths. The loss and KID curves need a run's metrics.jsonl."""
    model = load(source, device)
    out_dir = Path(out_dir or default_out_dir(source))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cfg = model.config
    images, labels = load_split(cfg.data.dataset, "test", cfg.data.data_dir)
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    if cfg.diffusion.kind == "tutorial":
        x = to_float(images[:8], "unit")
        written.append(corruption_figure(x, out_dir / "1_corruption.png"))
        written.append(one_shot_figure(model, x, out_dir / "2_one_shot_denoising.png"))
        written.append(steps_figure(model, out_dir / "3_sampling_steps.png", seed=seed, progress=progress))
    elif cfg.model.kind == "autoencoder":
        written.extend(autoencoder_figures(model, out_dir))
    else:
        schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
        written.append(
            forward_process_figure(
                schedule,
                images[first[:5]],
                out_dir / "forward_process.png",
                labels=list(range(5)),
                value_range=model.value_range,
                name=cfg.diffusion.schedule,
            )
        )
        written.append(
            steps_figure(model, out_dir / "x0_prediction_per_step.png", steps=10, seed=seed, progress=progress)
        )
        written.append(snr_figure(model, out_dir / "snr.png"))
        if cfg.model.num_classes:
            written.append(guidance_figure(model, out_dir / "guidance_sweep.png", seed=seed, progress=progress))
        if cfg.latent is not None:
            written.extend(autoencoder_figures(model, out_dir))
    if Path(source).is_dir():
        rows = read_metrics(Path(source))
        for path in (
            loss_figure(rows, out_dir / "loss.png", model.name),
            kid_figure(rows, out_dir / "training_kid.png", model.name),
        ):
            if path:
                written.append(path)
    return written
