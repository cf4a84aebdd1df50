"""Samplers: pure functions over a `Denoiser` (its conditioning bound in) and an explicit, strictly descending
grid of timesteps.

Each sampler evaluates the denoiser once at every grid point (Heun also between them) and after the last grid
point steps to the data (alpha_bar = 1, sigma = 0), so it returns the final x0 prediction (clipped if the
denoiser clips). Neighbouring timesteps always come from the grid, never from a stride. Per-step scalars are
computed in float64 from the schedule and used as Python floats, so the image tensors only ever see work in
their own dtype.

The callback contract, one for every sampler (k-diffusion style; new keys never break old callbacks): at each
grid point, after the denoiser, `callback(step)` gets a dict
    i        index of the grid point, 0 .. steps-1        t      its timestep (the tutorial: the noise amount)
    steps    the grid's length                            x_t    the current sample (VP scaling), (B, C, H, W)
    x0, denoised   the denoiser's estimate of the clean sample (the same tensor under both names)
and may return a tensor shaped like x_t to replace it: the step is then taken from the returned x_t with the
same x0 estimate (what inpainting and other guided edits need). Return None to change nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnist_diffusion.diffusion.denoiser import Denoiser, eps_from_x0
from mnist_diffusion.diffusion.schedule import SPACINGS, NoiseSchedule, karras_timesteps, timestep_grid
from mnist_diffusion.errors import UserError

Callback = Callable[[dict], "torch.Tensor | None"]


def chain(*callbacks: Callback | None) -> Callback | None:
    """Callbacks run in turn at each step, each seeing the x_t the one before it returned; None if all are None."""
    active = [c for c in callbacks if c is not None]
    if len(active) <= 1:
        return active[0] if active else None

    def callback(step: dict) -> torch.Tensor | None:
        x_t = step["x_t"]
        for c in active:
            out = c({**step, "x_t": x_t})
            x_t = x_t if out is None else out
        return x_t

    return callback


def visit(callback: Callback | None, i: int, t: float, steps: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Hand grid point i to `callback`; returns x_t, or the replacement the callback returned."""
    if callback is None:
        return x
    out = callback({"i": i, "t": t, "steps": steps, "x_t": x, "x0": x0, "denoised": x0})
    if out is None:
        return x
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise UserError(f"A sampling callback returned {type(out).__name__} "
                        f"{tuple(getattr(out, 'shape', ()))}; return None or a tensor shaped like x_t {tuple(x.shape)}.")
    return out.to(x)


def prepare_grid(schedule: NoiseSchedule, timesteps, end: float | None = None) -> tuple[list, torch.Tensor]:
    """The grid as Python numbers, and alpha_bar (float64) at each grid point followed by 1.0 for the data (or,
    with `end`, by alpha_bar at timestep `end`, below the grid: a solve over part of the path)."""
    grid = torch.as_tensor(timesteps).detach().cpu()
    if grid.ndim != 1 or grid.numel() == 0:
        raise UserError(
            f"A sampling grid must be a non-empty 1-D list of timesteps, got shape {tuple(grid.shape)}."
        )
    if (grid[1:] >= grid[:-1]).any():
        raise UserError(f"A sampling grid must be strictly descending, got {grid.tolist()}.")
    ab = schedule.alpha_bar(grid)
    if end is None:
        return grid.tolist(), torch.cat([ab, ab.new_ones(1)])
    if not end < grid[-1].item():
        raise UserError(f"A partial solve must end below its grid's last timestep {grid[-1].item():g}, got {end:g}.")
    return grid.tolist(), torch.cat([ab, schedule.alpha_bar(torch.tensor([float(end)], dtype=grid.dtype))])


def gaussian_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like x, drawn from `generator` (on its own device) or the global generator."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


@torch.no_grad()
def sample_ddpm(
    denoiser: Denoiser, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral sampling, Ho et al. (2020) alg. 2, via the posterior q(x_s | x_t, x0) between grid points."""
    ts, ab = prepare_grid(denoiser.schedule, timesteps)
    ab_t, ab_s = ab[:-1], ab[1:]
    beta = 1 - ab_t / ab_s  # the jump t -> s as one step: Ho's eq. 7 with alpha_bar_{t-1} -> alpha_bar_s
    c_x0 = (ab_s.sqrt() * beta / (1 - ab_t)).tolist()
    c_xt = ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t)).tolist()
    std = (beta * (1 - ab_s) / (1 - ab_t)).sqrt().tolist()  # beta-tilde; 0 for the last jump to the data
    for i, t in enumerate(ts):
        x0, _ = denoiser(x, t)
        x = visit(callback, i, t, len(ts), x, x0)
        x = c_x0[i] * x0 + c_xt[i] * x
        if std[i] > 0:
            x = x + std[i] * gaussian_like(x, generator)
    return x


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
    callback: Callback | None = None, eta: float = 0.0, end: float | None = None,
) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. 12; eta=0 is deterministic, eta=1 matches DDPM ancestral sampling.

    end: None steps to the data after the last grid point; a timestep stops there instead (x_end, not x0).
    """
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"DDIM's eta must be between 0 and 1, got {eta}.")
    ts, ab = prepare_grid(denoiser.schedule, timesteps, end)
    ab_t, ab_s = ab[:-1], ab[1:]
    sig = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()  # eq. 16
    c_x0 = ab_s.sqrt().tolist()
    c_eps = (1 - ab_s - sig**2).clamp(min=0).sqrt().tolist()
    std = sig.tolist()
    a_t, s_t = ab_t.sqrt().tolist(), (1 - ab_t).sqrt().tolist()
    for i, t in enumerate(ts):
        x0, eps = denoiser(x, t)
        replaced = visit(callback, i, t, len(ts), x, x0)
        if replaced is not x:  # the step goes on from the new x_t: its eps given the same x0 estimate
            eps = eps_from_x0(replaced, x0, a_t[i], s_t[i])
        x = c_x0[i] * x0 + c_eps[i] * eps
        if std[i] > 0:
            x = x + std[i] * gaussian_like(x, generator)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
    callback: Callback | None = None, end: float | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) alg. 2: multistep data prediction in lambda = log(alpha/sigma).

    The first step is first order (no history yet). The last step goes to the data, where lambda
    is infinite: the first-order update there is exactly x = x0 and the second-order term has no
    finite limit, so it is first order too. With `end` (a timestep below the grid) the solve stops at
    x_end, and its last step stays second order.
    """
    ts, ab = prepare_grid(denoiser.schedule, timesteps, end)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = torch.log(alpha) - torch.log(sigma)  # +inf at the data
    h = lam[1:] - lam[:-1]
    ratio = (sigma[1:] / sigma[:-1]).tolist()
    phi = (-alpha[1:] * torch.expm1(-h)).tolist()  # alpha_s (1 - e^-h); 1 for the jump to the data
    r = torch.cat([h.new_ones(1), h[:-1] / h[1:]]).tolist()  # h_{i-1} / h_i
    x0_prev = None
    for i, t in enumerate(ts):
        x0, _ = denoiser(x, t)
        x = visit(callback, i, t, len(ts), x, x0)
        if x0_prev is None or (i == len(ts) - 1 and end is None):
            d = x0
        else:
            d = x0 + (x0 - x0_prev) / (2 * r[i])
        x = ratio[i] * x + phi[i] * d
        x0_prev = x0
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Deterministic Heun, Karras et al. (2022) alg. 1, in VE sigma space; the last step to sigma=0 is Euler.

    The timestep grid maps to sigmas with the schedule's sigma(t) (use `karras_timesteps` for
    Karras' own spacing). The VP net sees x_vp = x_ve / sqrt(1 + sigma^2). NFE = 2 * len(grid) - 1.
    `generator` is unused (no churn); it is accepted so all samplers share one signature.
    """
    ts, ab = prepare_grid(denoiser.schedule, timesteps)
    sig = ((1 - ab) / ab).sqrt().tolist()  # VE sigma per grid point, then 0 for the data
    c_in = ab.sqrt().tolist()  # 1 / sqrt(1 + sigma^2): VE -> VP scaling
    x_vp, x = x, x / c_in[0]
    for i, t in enumerate(ts):
        x0, _ = denoiser(x_vp, t)
        replaced = visit(callback, i, t, len(ts), x_vp, x0)
        if replaced is not x_vp:
            x_vp, x = replaced, replaced / c_in[i]
        if i == len(ts) - 1:
            return x0  # Euler to sigma = 0: x + (0 - sigma) (x - x0) / sigma = x0
        d = (x - x0) / sig[i]  # the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma
        dt = sig[i + 1] - sig[i]
        x_euler = x + dt * d
        x0_next, _ = denoiser(x_euler * c_in[i + 1], ts[i + 1])
        x = x + dt * 0.5 * (d + (x_euler - x0_next) / sig[i + 1])
        x_vp = x * c_in[i + 1]
    raise AssertionError("unreachable: the loop returns at the last grid point")


@torch.no_grad()
def sample_consistency(
    denoiser: Denoiser, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Multistep consistency sampling, Song et al. (2023) alg. 1: jump to x0, then noise it afresh to the next
    grid point, x_s = alpha_s x0 + sigma_s z. For a consistency model, whose x0 is the end of the ODE path
    through x_t; one grid point = one network pass (two where a callback replaces x_t)."""
    ts, ab = prepare_grid(denoiser.schedule, timesteps)
    alpha, sigma = ab.sqrt().tolist(), (1 - ab).sqrt().tolist()
    for i, t in enumerate(ts):
        x0, _ = denoiser(x, t)
        replaced = visit(callback, i, t, len(ts), x, x0)
        if replaced is not x:  # the jump ignores x_t, so a steered x_t needs its own pass
            x, (x0, _) = replaced, denoiser(replaced, t)
        x = x0 if i == len(ts) - 1 else alpha[i + 1] * x0 + sigma[i + 1] * gaussian_like(x, generator)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpmpp_2m": sample_dpmpp_2m,
    "heun": sample_heun,
    "consistency": sample_consistency,
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
    schedule = denoiser.schedule
    if spacing == "karras":
        grid = karras_timesteps(schedule, steps)
    elif spacing in SPACINGS:
        grid = timestep_grid(schedule.timesteps, steps, spacing)
    else:
        choices = ", ".join((*SPACINGS, "karras"))
        raise UserError(f"Unknown timestep spacing {spacing!r}; choose one of: {choices}.")
    extra = {"eta": eta} if name == "ddim" else {}
    return SAMPLERS[name](denoiser, x_T, grid, generator=generator, callback=callback, **extra)
