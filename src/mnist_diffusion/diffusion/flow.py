"""Flow matching on the straight path (Lipman et al. 2023; Liu et al. 2023, "rectified flow").

Notation (code name -> symbol), t in [0, 1], data at t = 0 and noise at t = 1:
    x_t     x_t = (1 - t) x0 + t eps, the straight path between a clean sample and Gaussian noise
    v       dx_t/dt = eps - x0, the velocity a flow network predicts ('velocity' prediction)
    alpha   1 - t, the signal coefficient; sigma = t, the noise coefficient (x_t = alpha x0 + sigma eps, as on
            the VP path but with alpha + sigma = 1); the VE level sigma / alpha = t / (1 - t) matches a VP
            sample of the same signal-to-noise ratio, so guidance intervals keep their meaning
    shift   the timestep shift of Esser et al. (2024, SD3): t -> shift t / (1 + (shift - 1) t)

Samplers integrate the probability-flow ODE dx/dt = v(x, t) from t = 1 to 0 over an explicit descending grid
that ends at 0, from the denoiser's clean estimate alone: on the straight path v = (x_t - x0) / t, so every
prediction type (velocity, x0, eps) serves them. The Euler step in that form, x_s = (s / t) x_t + (1 - s / t)
x0, is the tutorial's sampler when x0 is its network's output and the grid is uniform (`tutorial.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mnist_diffusion.diffusion.ddpm_loss import drop_labels
from mnist_diffusion.diffusion.denoiser import target_for
from mnist_diffusion.diffusion.steps import Callback, visit
from mnist_diffusion.errors import UserError

Denoise = Callable[[torch.Tensor, float], "tuple[torch.Tensor, torch.Tensor]"]
TIME_SAMPLINGS = ("uniform", "logit_normal")
NETWORK_TIME_SCALE = 1000.0  # the network sees 1000 t: the range its sinusoidal time embedding was built for


class FlowPath:
    """The straight path as the denoiser sees a noise schedule: (alpha, sigma) = (1 - t, t) for t in [0, 1]."""

    name = "flow"
    timesteps = 1

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        """(alpha, sigma) for one time as Python floats."""
        if not 0.0 <= t <= 1.0:
            raise UserError(f"Flow time {t} is outside [0, 1].")
        return 1.0 - t, t

    def coefficients(self, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma) for per-sample t (B,) or a scalar, shaped (B, 1, ..., 1) and typed like `like`."""
        t = torch.as_tensor(t, dtype=torch.float64)
        shape = (-1,) + (1,) * (like.ndim - 1) if t.ndim else ()
        return (1 - t).to(like.device, like.dtype).reshape(shape), t.to(like.device, like.dtype).reshape(shape)

    def network_time(self, t):
        """What the network's time input gets for path time t."""
        return t * NETWORK_TIME_SCALE

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - t) x0 + t eps; t (B,) or a scalar in [0, 1]."""
        alpha, sigma = self.coefficients(t, x0)
        return alpha * x0 + sigma * eps


def sample_times(
    batch: int,
    kind: str = "uniform",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times (B,) in (0, 1): uniform, or logit-normal (Esser et al. 2024: sigmoid of N(mean, std^2),
    which puts more training where the middle of the path is hardest)."""
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=device))
    raise UserError(f"Unknown flow time sampling {kind!r}; choose one of: {', '.join(TIME_SAMPLINGS)}.")


def flow_grid(steps: int, shift: float = 1.0) -> list[float]:
    """A descending grid of steps + 1 times from 1 to 0, uniform, or with SD3's timestep shift t -> shift t /
    (1 + (shift - 1) t) (Esser et al. 2024): shift > 1 puts more of the steps where noise dominates."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise UserError(f"The number of sampling steps must be a whole number >= 1, got {steps!r}.")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise UserError(f"The timestep shift must be a finite number > 0, got {shift!r}.")
    ts = [(steps - i) / steps for i in range(steps + 1)]
    return ts if shift == 1 else [shift * t / (1 + (shift - 1) * t) for t in ts]


def _check_grid(ts: list[float]) -> list[float]:
    ts = [float(t) for t in ts]
    if len(ts) < 2 or ts[-1] != 0.0 or not 0.0 < ts[0] <= 1.0 or any(b >= a for a, b in zip(ts, ts[1:])):
        raise UserError(f"A flow grid must descend strictly from at most 1 to exactly 0, got {ts}.")
    return ts


@torch.no_grad()
def sample_euler(
    denoiser: Denoise,
    x: torch.Tensor,
    ts: list[float],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
):
    """Euler steps of dx/dt = (x - x0) / t over the grid: x_s = (s / t) x_t + (1 - s / t) x0. Returns x at 0."""
    ts = _check_grid(ts)
    steps = len(ts) - 1
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x0, _ = denoiser(x, t)
        x = visit(callback, i, t, steps, x, x0)
        x = x * (s / t) + x0 * (1 - s / t)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoise,
    x: torch.Tensor,
    ts: list[float],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
):
    """Heun's second-order method (the trapezoid rule with an Euler predictor, Karras et al. 2022 alg. 1) on
    dx/dt = (x - x0) / t; the last step, to t = 0 where the slope has no second point, is Euler. Two network
    evaluations a step but the last."""
    ts = _check_grid(ts)
    steps = len(ts) - 1
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x0, _ = denoiser(x, t)
        x = visit(callback, i, t, steps, x, x0)
        if s == 0.0:
            x = x0  # Euler to t = 0: x + (0 - t) (x - x0) / t
            continue
        d = (x - x0) / t
        x_euler = x + (s - t) * d
        x0_next, _ = denoiser(x_euler, s)
        x = x + (s - t) * 0.5 * (d + (x_euler - x0_next) / s)
    return x


@torch.no_grad()
def sample_midpoint(
    denoiser: Denoise,
    x: torch.Tensor,
    ts: list[float],
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
):
    """The explicit midpoint method on dx/dt = (x - x0) / t: the slope at half a step decides the whole step;
    the last step, to t = 0, is Euler (x0 itself), as in `sample_heun`. Two network evaluations a step but the
    last. `generator` is unused here and in the other ODE samplers (no noise is drawn)."""
    ts = _check_grid(ts)
    steps = len(ts) - 1
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x0, _ = denoiser(x, t)
        x = visit(callback, i, t, steps, x, x0)
        if s == 0.0:
            x = x0
            continue
        mid = 0.5 * (t + s)
        x_mid = x + (mid - t) * (x - x0) / t
        x0_mid, _ = denoiser(x_mid, mid)
        x = x + (s - t) * (x_mid - x0_mid) / mid
    return x


def flow_matching_loss(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    prediction: str = "velocity",
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    label_dropout: float = 0.0,
    time_sampling: str = "uniform",
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conditional flow matching (Lipman et al. 2023): t from `sample_times`, eps ~ N(0, I), x_t on the straight
    path, MSE of net(x_t, 1000 t, labels) to the `prediction` target (velocity eps - x0, or x0, or eps). Labels
    are dropped to the "no label" class `num_classes` with probability `label_dropout` (classifier-free
    guidance). Draws t, eps, then the dropout from `generator`. Returns (loss, per_sample_loss (B,), t (B,))."""
    device = generator.device if generator is not None else x0.device
    t = sample_times(x0.shape[0], time_sampling, mean, std, generator, device).to(x0.device, x0.dtype)
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    if labels is not None and num_classes and label_dropout > 0:
        labels = drop_labels(labels, num_classes, label_dropout, generator)
    path = FlowPath()
    alpha, sigma = path.coefficients(t, x0)
    out = net(alpha * x0 + sigma * eps, path.network_time(t), labels)
    per_sample = ((out.float() - target_for(prediction, x0, eps, alpha, sigma).float()) ** 2).flatten(1).mean(1)
    return per_sample.mean(), per_sample, t
