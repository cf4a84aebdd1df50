"""Samplers: pure functions over a `Denoiser` and an explicit, strictly descending grid of timesteps.

Each sampler evaluates the denoiser once at every grid point (Heun also between them), calls
`callback(i, t, x_t, x0_pred)` there with t = timesteps[i] and x_t in VP scaling, and after the
last grid point steps to the data (alpha_bar = 1, sigma = 0), so it returns the final x0 prediction
(clipped if the denoiser clips). Neighbouring timesteps always come from the grid, never from a
stride. Per-step scalars are computed in float64 from the schedule and used as Python floats, so
the image tensors only ever see work in their own dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.schedule import SPACINGS, NoiseSchedule, karras_timesteps, timestep_grid
from mnist_diffusion.errors import UserError

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


def _prepare(schedule: NoiseSchedule, timesteps) -> tuple[list, torch.Tensor]:
    """The grid as Python numbers, and alpha_bar (float64) at each grid point followed by 1.0 for the data."""
    grid = torch.as_tensor(timesteps).detach().cpu()
    if grid.ndim != 1 or grid.numel() == 0:
        raise UserError(
            f"A sampling grid must be a non-empty 1-D list of timesteps, got shape {tuple(grid.shape)}."
        )
    if (grid[1:] >= grid[:-1]).any():
        raise UserError(f"A sampling grid must be strictly descending, got {grid.tolist()}.")
    ab = schedule.alpha_bar(grid)
    return grid.tolist(), torch.cat([ab, ab.new_ones(1)])


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like x, drawn from `generator` (on its own device) or the global generator."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser, x: torch.Tensor, timesteps, labels=None, guidance: float = 1.0,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral sampling, Ho et al. (2020) alg. 2, via the posterior q(x_s | x_t, x0) between grid points."""
    ts, ab = _prepare(denoiser.schedule, timesteps)
    ab_t, ab_s = ab[:-1], ab[1:]
    beta = 1 - ab_t / ab_s  # the jump t -> s as one step: Ho's eq. 7 with alpha_bar_{t-1} -> alpha_bar_s
    c_x0 = (ab_s.sqrt() * beta / (1 - ab_t)).tolist()
    c_xt = ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t)).tolist()
    std = (beta * (1 - ab_s) / (1 - ab_t)).sqrt().tolist()  # beta-tilde; 0 for the last jump to the data
    for i, t in enumerate(ts):
        x0, _ = denoiser(x, t, labels, guidance)
        if callback is not None:
            callback(i, t, x, x0)
        x = c_x0[i] * x0 + c_xt[i] * x
        if std[i] > 0:
            x = x + std[i] * _noise(x, generator)
    return x


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser, x: torch.Tensor, timesteps, labels=None, guidance: float = 1.0,
    generator: torch.Generator | None = None, callback: Callback | None = None, eta: float = 0.0,
) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. 12; eta=0 is deterministic, eta=1 matches DDPM ancestral sampling."""
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"DDIM's eta must be between 0 and 1, got {eta}.")
    ts, ab = _prepare(denoiser.schedule, timesteps)
    ab_t, ab_s = ab[:-1], ab[1:]
    sig = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()  # eq. 16
    c_x0 = ab_s.sqrt().tolist()
    c_eps = (1 - ab_s - sig**2).clamp(min=0).sqrt().tolist()
    std = sig.tolist()
    for i, t in enumerate(ts):
        x0, eps = denoiser(x, t, labels, guidance)
        if callback is not None:
            callback(i, t, x, x0)
        x = c_x0[i] * x0 + c_eps[i] * eps
        if std[i] > 0:
            x = x + std[i] * _noise(x, generator)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser, x: torch.Tensor, timesteps, labels=None, guidance: float = 1.0,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) alg. 2: multistep data prediction in lambda = log(alpha/sigma).

    The first step is first order (no history yet). The last step goes to the data, where lambda
    is infinite: the first-order update there is exactly x = x0 and the second-order term has no
    finite limit, so it is first order too.
    """
    ts, ab = _prepare(denoiser.schedule, timesteps)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)  # +inf at the data
    h = lam[1:] - lam[:-1]
    ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi = (-alpha[1:] * torch.expm1(-h)).tolist()  # alpha_s (1 - e^-h); 1 for the jump to the data
    r = torch.cat([h.new_ones(1), h[:-1] / h[1:]]).tolist()  # h_{i-1} / h_i
    x0_prev = None
    for i, t in enumerate(ts):
        x0, _ = denoiser(x, t, labels, guidance)
        if callback is not None:
            callback(i, t, x, x0)
        if x0_prev is None or i == len(ts) - 1:
            d = x0
        else:
            d = x0 + (x0 - x0_prev) / (2 * r[i])
        x = ratio[i] * x + phi[i] * d
        x0_prev = x0
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser, x: torch.Tensor, timesteps, labels=None, guidance: float = 1.0,
    generator: torch.Generator | None = None, callback: Callback | None = None,
) -> torch.Tensor:
    """Deterministic Heun, Karras et al. (2022) alg. 1, in VE sigma space; the last step to sigma=0 is Euler.

    The timestep grid maps to sigmas with the schedule's sigma(t) (use `karras_timesteps` for
    Karras' own spacing). The VP net sees x_vp = x_ve / sqrt(1 + sigma^2). NFE = 2 * len(grid) - 1.
    `generator` is unused (no churn); it is accepted so all samplers share one signature.
    """
    ts, ab = _prepare(denoiser.schedule, timesteps)
    sig = ((1 - ab) / ab).sqrt().tolist()  # VE sigma per grid point, then 0 for the data
    c_in = ab.sqrt().tolist()  # 1 / sqrt(1 + sigma^2): VE -> VP scaling
    x_vp, x = x, x / c_in[0]
    for i, t in enumerate(ts):
        x0, _ = denoiser(x_vp, t, labels, guidance)
        if callback is not None:
            callback(i, t, x_vp, x0)
        if i == len(ts) - 1:
            return x0  # Euler to sigma = 0: x + (0 - sigma) (x - x0) / sigma = x0
        d = (x - x0) / sig[i]  # the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
        dt = sig[i + 1] - sig[i]
        x_euler = x + dt * d
        x0_next, _ = denoiser(x_euler * c_in[i + 1], ts[i + 1], labels, guidance)
        x = x + dt * 0.5 * (d + (x_euler - x0_next) / sig[i + 1])
        x_vp = x * c_in[i + 1]
    raise AssertionError("unreachable: the loop returns at the last grid point")


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "heun": sample_heun,
}


def function_evaluations(name: str, steps: int) -> int:
    """Network evaluations a sampler spends on a `steps`-point grid (guidance batches them, not doubles)."""
    return 2 * steps - 1 if name == "heun" else steps


def sample(
    name: str,
    denoiser: Denoiser,
    x_T: torch.Tensor,
    steps: int,
    spacing: str = "trailing",
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Run sampler `name` from x_T (B, C, H, W) ~ N(0, I) over a `steps`-point grid; returns x0 (B, C, H, W).

    spacing: 'leading' | 'linspace' | 'trailing' (see `timestep_grid`) or 'karras' (`karras_timesteps`).
    eta applies to 'ddim' only.
    """
    if name not in SAMPLERS:
        raise UserError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"The number of sampling steps must be a whole number >= 1, got {steps!r}.")
    if eta != 0.0 and name != "ddim":
        raise UserError(f"eta={eta} only applies to the ddim sampler, not {name!r}; leave eta at 0.")
    if labels is not None:
        top = denoiser.num_classes
        if top == 0:
            raise UserError("This model is unconditional, so it takes no class labels; sample without them.")
        if labels.shape != (x_T.shape[0],) or labels.min() < 0 or labels.max() > top:
            raise UserError(
                f"Labels must be one class in [0, {top}] per sample ({x_T.shape[0]}), got shape "
                f"{tuple(labels.shape)} with values {labels.min().item()}..{labels.max().item()}."
            )
    schedule = denoiser.schedule
    if spacing == "karras":
        grid = karras_timesteps(schedule, steps)
    elif spacing in SPACINGS:
        grid = timestep_grid(schedule.timesteps, steps, spacing)
    else:
        choices = ", ".join((*SPACINGS, "karras"))
        raise UserError(f"Unknown timestep spacing {spacing!r}; choose one of: {choices}.")
    extra = {"eta": eta} if name == "ddim" else {}
    return SAMPLERS[name](
        denoiser, x_T, grid, labels=labels, guidance=guidance, generator=generator, callback=callback, **extra
    )
