"""Few-step students distilled from a guided teacher, with the guidance scale as the student's input.

The student is the teacher's network with two changes: it predicts v (Salimans & Ho 2022, well conditioned
at both ends of the noise range, where a few large steps need it) and it takes the guidance scale w as an
input (Meng et al. 2023), so one pass per step stands for the teacher's doubled classifier-free-guidance
batch. It starts from the teacher's weights -- or, with `distill.student_channels`, is a narrower U-Net of the
same layout that starts fresh and samples faster; w is drawn per sample from [guidance_min, guidance_max].
Both objectives noise real training data (in the teacher's latent space for a latent teacher) to the
student's timesteps, so the student learns where sampling will take it.

- 'trajectory' (progressive distillation in one phase, as in TRACT, Berthelot et al. 2023): on the
  student's K-point trailing grid, each student DDIM step from t_k to t_{k+1} must land where the teacher's
  DPM-Solver++(2M) lands after teacher_steps / K steps over the same stretch. The x0 that makes the DDIM
  step land there is the regression target, weighted by max(SNR, 1) (Salimans & Ho's truncated SNR).
  Samples with DDIM on the same grid.
- 'consistency' (consistency distillation, Song et al. 2023, with the stop-gradient target of Song &
  Dhariwal 2024): on a `discretisation`-point grid, the student's x0 at t_{n+1} must equal its own x0
  (no gradient) at the point one guided teacher DDIM step takes x_{t_{n+1}} to; at the last point the target
  is the teacher's x0. Samples with multistep consistency sampling, any number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from torch import nn

from mnist_diffusion import assets
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import ConfigError, RunConfig, SampleConfig
from mnist_diffusion.diffusion.ddpm_loss import drop_labels
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.samplers import sample_dpmpp_2m
from mnist_diffusion.diffusion.schedule import NoiseSchedule, make_schedule, timestep_grid
from mnist_diffusion.latent import encode_latents, load_autoencoder, weights_sha256
from mnist_diffusion.models import build_model
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.runtime import CompiledNetwork
from mnist_diffusion.training.layout import resolve_layout

STUDENT_SAMPLER = {"trajectory": "ddim", "consistency": "consistency"}


@dataclass
class Teacher:
    net: nn.Module  # eval mode, no gradients
    config: RunConfig
    weights: dict[str, torch.Tensor]
    sha256: str
    path: Path


def load_teacher(cfg: RunConfig, device: torch.device) -> Teacher:
    """The teacher `cfg.distill.teacher` names, checked: a class-conditional DDPM, and (once the run has recorded
    it) the weights hash `distill.teacher_sha256`."""
    d = cfg.distill
    path = ckpt.resolve_model_path(d.teacher)
    loaded = ckpt.load_checkpoint(path, device)
    tc = loaded.config
    if tc.diffusion.kind != "ddpm" or tc.model.num_classes == 0 or tc.model.guidance_input:
        raise ConfigError(
            f"distill.teacher {d.teacher!r} is a {tc.recipe!r} model; a teacher must be a "
            "class-conditional diffusion model trained with label dropout (ddpm-cond, ldm)."
        )
    weights = ckpt.model_weights(loaded)
    sha = weights_sha256(weights)
    if d.teacher_sha256 and sha != d.teacher_sha256:
        raise ConfigError(
            f"This run was distilled from the teacher whose weights hash to {d.teacher_sha256}, but "
            f"{path} hashes to {sha}; point distill.teacher at the teacher it started from."
        )
    net = ckpt.load_weights(build_model(tc.model).to(device), weights, path).eval().requires_grad_(False)
    if resolve_layout(cfg, device).channels_last:  # the student's layout
        net = net.to(memory_format=torch.channels_last)
    return Teacher(net, tc, weights, sha, path)


def bind_teacher(cfg: RunConfig, device: torch.device) -> tuple[RunConfig, Teacher]:
    """A new run takes the teacher's network (plus the guidance input), noise process (with v prediction),
    data range and latent space, samples with the method's sampler at `distill.steps`, and records the teacher's
    hash; a resumed run (hash recorded) is only checked. A model, diffusion or latent setting given for a new run
    is refused, since the teacher's would silently replace it."""
    teacher = load_teacher(cfg, device)
    d = cfg.distill
    if d.teacher_sha256:
        return cfg, teacher
    _refuse_own_sections(cfg)
    tc = teacher.config
    reference = d.teacher if assets.is_packaged(d.teacher, "model") else str(teacher.path.resolve())
    sample = SampleConfig(
        sampler=STUDENT_SAMPLER[d.method], steps=d.steps, guidance=tc.sample.guidance, spacing="trailing"
    )
    channels = tuple(d.student_channels) if d.student_channels else tc.model.channels
    cfg = replace(
        cfg,
        data=replace(cfg.data, dataset=tc.data.dataset, value_range=tc.data.value_range),
        model=replace(tc.model, guidance_input=True, channels=channels),
        diffusion=replace(tc.diffusion, prediction="v"),
        latent=tc.latent,
        sample=sample,
        distill=replace(d, teacher=reference, teacher_sha256=teacher.sha256),
    )
    return cfg, teacher


def _refuse_own_sections(cfg: RunConfig) -> None:
    base = get_recipe(cfg.recipe)
    for section in ("model", "diffusion", "latent"):
        given, default = getattr(cfg, section), getattr(base, section)
        if given == default:
            continue
        names = [
            f.name
            for f in fields(given or default)
            if None in (given, default) or getattr(given, f.name) != getattr(default, f.name)
        ]
        raise ConfigError(
            f"A distillation run takes its {section} settings from its teacher; drop "
            f"{section}.{names[0]} (the student is the teacher's network with a guidance input)."
        )


def init_student(net: nn.Module, teacher: Teacher, cfg: RunConfig) -> None:
    """Copy the teacher's weights into the student; only the guidance input (zero at its output) is new. A student
    of other widths (`distill.student_channels`) keeps its fresh weights: no tensor of the teacher fits it."""
    if tuple(cfg.model.channels) != tuple(teacher.config.model.channels):
        return
    missing, unexpected = net.load_state_dict(teacher.weights, strict=False)
    if unexpected or any(not k.startswith("guidance_mlp.") for k in missing):
        raise ConfigError(
            f"The student does not fit the teacher {teacher.path} (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )


def truncated_snr(schedule: NoiseSchedule, t: float) -> float:
    """max(SNR(t), 1): Salimans & Ho's weighting of an x0-space loss."""
    return max(float(schedule.snr(torch.tensor(t, dtype=torch.float64))), 1.0)


def segments(timesteps: int, steps: int, teacher_steps: int) -> list[tuple[list[float], float | None]]:
    """For each student step on the `steps`-point trailing grid: the teacher's grid over its stretch and where the
    stretch ends (None = the data). The teacher's points are teacher_steps / steps per student step, evenly spaced
    as the teacher's own trailing grid is (whose point after the last is t = -1, the data)."""
    grid = timestep_grid(timesteps, steps, "trailing").tolist()
    ends = grid[1:] + [-1]
    sub = teacher_steps // steps
    return [([t - (t - e) * j / sub for j in range(sub)], e if e >= 0 else None) for t, e in zip(grid, ends)]


def ddim_x0_target(
    schedule: NoiseSchedule, x_t: torch.Tensor, x_end: torch.Tensor, t: float, end: float | None
) -> torch.Tensor:
    """The x0 whose DDIM step (eta 0) from (x_t, t) lands exactly on x_end at `end` (None: the data, x0 = x_end).

    DDIM: x_s = alpha_s x0 + sigma_s (x_t - alpha_t x0) / sigma_t, solved for x0.
    """
    if end is None:
        return x_end
    ab_t, ab_s = (float(schedule.alpha_bar(torch.tensor(v, dtype=torch.float64))) for v in (t, end))
    a_t, s_t, a_s, s_s = ab_t**0.5, (1 - ab_t) ** 0.5, ab_s**0.5, (1 - ab_s) ** 0.5
    return (x_end - (s_s / s_t) * x_t) / (a_s - s_s * a_t / s_t)


def trajectory_loss(
    student: Denoiser, teacher: Denoiser, x0: torch.Tensor, eps: torch.Tensor, steps: int, teacher_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss (B,) and timesteps (B,) of the trajectory objective: the batch splits into one chunk per
    student step. Both denoisers have the batch's labels and guidance bound in; x0, eps: (B, C, H, W)."""
    schedule = student.schedule
    losses, times = [], []
    index = torch.arange(x0.shape[0], device=x0.device)
    for chunk, (teacher_grid, end) in zip(index.chunk(steps), segments(schedule.timesteps, steps, teacher_steps)):
        if chunk.numel() == 0:
            continue
        t = teacher_grid[0]
        ab = float(schedule.alpha_bar(torch.tensor(t, dtype=torch.float64)))
        x_t = ab**0.5 * x0[chunk] + (1 - ab) ** 0.5 * eps[chunk]
        labels, w = student.labels[chunk], student.guidance[chunk]
        with torch.no_grad():
            x_end = sample_dpmpp_2m(teacher.bind(labels, w), x_t, teacher_grid, end=end)
            target = ddim_x0_target(schedule, x_t, x_end, t, end)
        pred, _ = student.bind(labels, w)(x_t, t)
        error = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
        losses.append(truncated_snr(schedule, t) * error)
        times.append(torch.full_like(chunk, round(t)))
    return torch.cat(losses), torch.cat(times)


def consistency_loss(
    student: Denoiser,
    teacher: Denoiser,
    x0: torch.Tensor,
    eps: torch.Tensor,
    discretisation: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss (B,) and timesteps (B,) of consistency distillation on a `discretisation`-point trailing
    grid; the grid index n is drawn per sample from `generator`."""
    schedule = student.schedule
    grid = timestep_grid(schedule.timesteps, discretisation, "trailing").to(x0.device, torch.float32)
    device = generator.device if generator is not None else x0.device
    n = torch.randint(0, discretisation, (x0.shape[0],), generator=generator, device=device).to(x0.device)
    last = n == discretisation - 1
    t_hi, t_lo = grid[n], grid[(n + 1).clamp(max=discretisation - 1)]
    a_hi, s_hi = schedule.coefficients(t_hi, x0)
    x_hi = a_hi * x0 + s_hi * eps
    with torch.no_grad():
        x0_teacher, eps_teacher = teacher(x_hi, t_hi)
        a_lo, s_lo = schedule.coefficients(t_lo, x0)
        x_lo = a_lo * x0_teacher + s_lo * eps_teacher  # one teacher DDIM step, t_hi -> t_lo
        target, _ = student(x_lo, t_lo)
        keep = last.view(-1, *[1] * (x0.ndim - 1))
        target = torch.where(keep, x0_teacher.to(target.dtype), target)
    pred, _ = student(x_hi, t_hi)
    loss = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    return loss, t_hi.round().long()


def distill_objective(cfg: RunConfig, device: torch.device, teacher: Teacher | None = None):
    """The training objective (net, x, labels, generator) -> {"loss", "per_sample", "t"} of a distillation run;
    `teacher` is the one bind_teacher loaded (loaded here when None).

    x: images in the data range (encoded to the teacher's latents for a latent teacher); labels (B,) long.
    Random draws from `generator` in the order: guidance scales, label drops, noise, then the method's own.
    """
    d = cfg.distill
    teacher = teacher or load_teacher(cfg, device)
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
    autoencoder = load_autoencoder(cfg.latent, device) if cfg.latent is not None else None
    num_classes = cfg.model.num_classes
    teacher_prediction = teacher.config.diffusion.prediction
    # train.compile: the teacher's forwards (most of a step) run through torch.compile too, one graph per batch.
    teacher_net = CompiledNetwork(teacher.net) if cfg.train.compile else teacher.net

    def objective(net, x, labels, generator):
        x0 = encode_latents(autoencoder, x, cfg.latent.scale) if autoencoder is not None else x
        gen_device = generator.device if generator is not None else x0.device
        batch = x0.shape[0]
        w = torch.rand(batch, generator=generator, device=gen_device).to(x0.device)
        w = d.guidance_min + (d.guidance_max - d.guidance_min) * w
        labels = drop_labels(labels, num_classes, d.unconditional, generator)
        eps = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
        student = Denoiser(net, schedule, "v", labels=labels, guidance=w)
        guide = Denoiser(teacher_net, schedule, teacher_prediction, labels=labels, guidance=w)
        if d.method == "trajectory":
            per_sample, t = trajectory_loss(student, guide, x0, eps, d.steps, d.teacher_steps)
        else:
            per_sample, t = consistency_loss(student, guide, x0, eps, d.discretisation, generator)
        return {"loss": per_sample.mean(), "per_sample": per_sample, "t": t}

    return objective
