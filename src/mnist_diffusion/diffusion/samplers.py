"""Samplers: pure functions over a `Denoiser` (its conditioning bound in) and an explicit, strictly descending
grid of timesteps (the tutorial's own sampler: over its bare network and a step count), and `SAMPLERS`, the one
registry of what each can do, from which every list, check and help text about samplers is derived.

Each sampler evaluates the denoiser once at every grid point (Heun also between them) and after the last grid
point steps to the data (alpha_bar = 1, sigma = 0), so it returns the final x0 prediction (clipped if the
denoiser clips). Neighbouring timesteps always come from the grid, never from a stride. Per-step scalars are
computed in float64 from the schedule and used as Python floats, so the image tensors only ever see work in
their own dtype.

Every sampler takes the step callback of `steps.py` (its contract is written there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from mnist_diffusion.config import ConfigError, SampleConfig, check_guidance_interval
from mnist_diffusion.diffusion import flow, meanflow
from mnist_diffusion.diffusion.denoiser import Denoiser, eps_from_x0
from mnist_diffusion.diffusion.schedule import SPACINGS, NoiseSchedule, karras_timesteps, timestep_grid
from mnist_diffusion.diffusion.steps import Callback, chain, visit  # noqa: F401 - re-exported
from mnist_diffusion.errors import UserError


def prepare_grid(schedule: NoiseSchedule, timesteps, end: float | None = None) -> tuple[list, torch.Tensor]:
    """The grid as Python numbers, and alpha_bar (float64) at each grid point followed by 1.0 for the data (or,
    with `end`, by alpha_bar at timestep `end`, below the grid: a solve over part of the path)."""
    grid = torch.as_tensor(timesteps).detach().cpu()
    if grid.ndim != 1 or grid.numel() == 0:
        raise UserError(f"A sampling grid must be a non-empty 1-D list of timesteps, got shape {tuple(grid.shape)}.")
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
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    generator: torch.Generator | None = None,
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
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    end: float | None = None,
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
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    end: float | None = None,
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
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    generator: torch.Generator | None = None,
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
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    generator: torch.Generator | None = None,
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


@torch.no_grad()
def sample_tutorial(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int, callback: Callback | None = None
) -> torch.Tensor:
    """The tutorial's sampler (`diffusion/tutorial.py`): at step i, x <- x (1 - m) + net(x) m with m = 1 / (steps - i).

    Unlike the others it takes the bare network `net(x) -> x0` and a step count: the tutorial's process has no
    schedule. x: (B, C, H, W) starting point (uniform noise, made by the caller). m reaches 1 at the last step,
    so the result is the last prediction. `callback` gets the step dict (`visit`) with t = the nominal noise
    amount of the input, 1 - i / steps (what is left of the starting noise if every prediction were right), and
    may return a replacement for x.
    """
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"The number of sampling steps must be at least 1, got {steps!r}.")
    for i in range(steps):
        pred = net(x)
        x = visit(callback, i, 1.0 - i / steps, steps, x, pred)
        mix = 1.0 / (steps - i)
        x = x * (1 - mix) + pred * mix
    return x


# ---- the registry: what each sampler is and can do --------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler as the rest of the package sees it. Everything that lists, offers or checks samplers (the
    config check, the CLI's --sampler, the page, inpainting's resampling) reads these fields, so a new sampler
    is one function and one entry in `SAMPLERS`."""

    name: str  # what `sample.sampler`, --sampler and the page call it
    function: Callable[..., torch.Tensor]
    kinds: tuple[str, ...]  # the noise processes (`diffusion.kind`) it samples
    description: str  # one line, no parentheses: the algorithm and its paper
    evaluations_per_step: int = 1  # network passes per grid point (the step from the last one to the data: 1)
    stochastic: bool = False  # draws fresh noise while it walks (DDIM only with eta > 0)
    can_resample: bool = True  # RePaint's resampling (DDIM steps) may stand in for its walk when inpainting
    takes_eta: bool = False  # DDIM's eta applies
    needs_distilled: bool = False  # gives good digits only from a network distilled for it
    takes: Literal["denoiser", "network", "average_velocity"] = "denoiser"  # `function(denoiser, x_T, grid,
    # generator, callback)`, the tutorial's `function(net, x, steps, callback)`, or MeanFlow's `function(u, z, grid,
    # generator, callback)` over the average velocity u(z, r, t)
    variants: tuple[tuple[str, Callable[..., torch.Tensor]], ...] = ()  # (kind, function) where the same method
    # is written for another noise process's grid (flow matching's times in [0, 1])

    def function_for(self, kind: str) -> Callable[..., torch.Tensor]:
        """The function that runs this sampler for diffusion kind `kind`."""
        return dict(self.variants).get(kind, self.function)

    def evaluations(self, steps: int) -> int:
        """Network evaluations over a `steps`-point grid (guidance batches its two passes, so it does not double)."""
        return self.evaluations_per_step * (steps - 1) + 1


SAMPLERS: dict[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("ddpm", sample_ddpm, ("ddpm",), "ancestral sampling, Ho et al. 2020", stochastic=True),
        SamplerSpec("ddim", sample_ddim, ("ddpm",), "DDIM, Song et al. 2021; eta > 0 adds noise", takes_eta=True),
        SamplerSpec("dpmpp_2m", sample_dpmpp_2m, ("ddpm",), "DPM-Solver++(2M), Lu et al. 2022"),
        SamplerSpec(
            "heun",
            sample_heun,
            ("ddpm", "flow"),
            "Heun's 2nd-order ODE solver, Karras et al. 2022",
            evaluations_per_step=2,
            can_resample=False,
            variants=(("flow", flow.sample_heun),),
        ),
        SamplerSpec(
            "euler", flow.sample_euler, ("flow",), "Euler steps of the flow ODE, Lipman et al. 2023", can_resample=False
        ),
        SamplerSpec(
            "midpoint",
            flow.sample_midpoint,
            ("flow",),
            "the explicit midpoint method on the flow ODE",
            evaluations_per_step=2,
            can_resample=False,
        ),
        SamplerSpec(
            "meanflow",
            meanflow.sample_meanflow,
            ("meanflow",),
            "MeanFlow's jumps by the average velocity, Geng et al. 2025; 1 step is one network pass",
            can_resample=False,
            takes="average_velocity",
        ),
        SamplerSpec(
            "consistency",
            sample_consistency,
            ("ddpm",),
            "multistep consistency sampling, Song et al. 2023; for consistency-distilled models",
            stochastic=True,
            needs_distilled=True,
        ),
        SamplerSpec(
            "tutorial",
            sample_tutorial,
            ("tutorial",),
            "the seed tutorial's own sampler",
            can_resample=False,
            takes="network",
        ),
    )
}


def names(kind: str | None = None, *, for_any_model: bool = False) -> tuple[str, ...]:
    """The samplers of diffusion kind `kind` (None: all), in registry order; `for_any_model` leaves out those that
    need a network distilled for them (what to offer for an ordinary model)."""
    return tuple(
        s.name
        for s in SAMPLERS.values()
        if (kind is None or kind in s.kinds) and not (for_any_model and s.needs_distilled)
    )


def get(name: str) -> SamplerSpec:
    """The registered sampler `name`; an unknown name is a `ConfigError` listing the choices."""
    if name not in SAMPLERS:
        raise ConfigError(f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def check(name: str, kind: str) -> SamplerSpec:
    """The sampler `name` if it samples diffusion kind `kind`, else a `ConfigError` naming those that do."""
    allowed = names(kind)
    if not allowed:
        served = sorted({k for s in SAMPLERS.values() for k in s.kinds})
        raise ConfigError(
            f"A model of diffusion kind {kind!r} has no sampler; samplers serve the kinds {', '.join(served)}."
        )
    if name not in allowed:
        what = f"Unknown sampler {name!r} for" if name not in SAMPLERS else f"The sampler {name!r} does not fit"
        raise ConfigError(f"{what} a model of diffusion kind {kind!r}; choose one of: {', '.join(allowed)}.")
    return SAMPLERS[name]


def _check_eta(spec: SamplerSpec, eta: float) -> None:
    if eta and not spec.takes_eta:
        takers = " or ".join(s.name for s in SAMPLERS.values() if s.takes_eta)
        raise ConfigError(f"eta={eta:g} only applies to the {takers} sampler, not {spec.name!r}; leave eta at 0.")


def check_settings(sample: SampleConfig, kind: str) -> SamplerSpec:
    """Sample settings checked for a model of diffusion kind `kind`: the sampler serves it, eta only where it
    applies, a well-formed guidance interval. Returns the sampler; raises `ConfigError` (one sentence)."""
    check_guidance_interval(sample)
    spec = check(sample.sampler, kind)
    _check_eta(spec, sample.eta)
    return spec


def check_resample(name: str, kind: str) -> None:
    """Refuse RePaint's resampling (resample > 1, DDIM steps) for a sampler that cannot stand aside for it."""
    if not get(name).can_resample:
        able = [n for n in names(kind, for_any_model=True) if SAMPLERS[n].can_resample]
        raise ConfigError(
            f"RePaint resampling (resample > 1) steps with DDIM; the {name!r} sampler cannot resample: "
            f"use resample=1{', or sampler ' + ' / '.join(able) if able else ''}."
        )


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
    eta applies to samplers that take it (DDIM) only. For samplers over a `Denoiser`; the tutorial's sampler
    takes its network directly (`sample_tutorial`).
    """
    spec = get(name)
    if spec.takes != "denoiser":
        raise UserError(
            f"The {name!r} sampler takes the network itself, not a denoiser; call {spec.function.__name__}."
        )
    check(name, "ddpm")  # a timestep grid of DDPM's schedule; flows walk their own (`process.FlowProcess`)
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"The number of sampling steps must be a whole number >= 1, got {steps!r}.")
    _check_eta(spec, eta)
    schedule = denoiser.schedule
    if spacing == "karras":
        grid = karras_timesteps(schedule, steps)
    elif spacing in SPACINGS:
        grid = timestep_grid(schedule.timesteps, steps, spacing)
    else:
        choices = ", ".join((*SPACINGS, "karras"))
        raise UserError(f"Unknown timestep spacing {spacing!r}; choose one of: {choices}.")
    extra = {"eta": eta} if spec.takes_eta else {}
    return spec.function(denoiser, x_T, grid, generator=generator, callback=callback, **extra)
