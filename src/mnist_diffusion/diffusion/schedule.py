"""The variance-preserving noise process q(x_t | x0) and the grids of timesteps samplers walk.

Timesteps are DDPM indices t in {0, ..., T-1}: t = 0 is the first (least noisy) training step, and
the data itself sits just below it (alpha_bar = 1). Tables are computed once in float64 on the CPU
("use float64 for accuracy", as improved-diffusion does); lookups return float64 and anything that
touches an image tensor is cast to that tensor's dtype and device at the very end.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field

import torch

from mnist_diffusion.config import ScheduleName, Spacing
from mnist_diffusion.errors import UserError

SCHEDULES = typing.get_args(ScheduleName)
SPACINGS = tuple(s for s in typing.get_args(Spacing) if s != "karras")  # grids of integer steps; karras: below


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al. (2020): betas linear from 1e-4 to 0.02 at T=1000, both scaled by 1000/T otherwise."""
    scale = 1000.0 / timesteps
    if scale * 0.02 >= 1.0:
        raise UserError(
            f"The linear schedule needs timesteps > 20 (its last beta would reach 1), got timesteps={timesteps}."
        )
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) eq. 17: alpha_bar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2).

    beta_t = 1 - alpha_bar(t+1)/alpha_bar(t), clipped at 0.999 so that the last step, where f reaches 0,
    keeps a finite signal-to-noise ratio.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


@dataclass(frozen=True, eq=False, repr=False)
class NoiseSchedule:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for DDPM index t in [0, T-1].

    `betas` and `alphas_cumprod` are float64 CPU tensors of shape (T,). Fractional t (used by Karras
    grids and Heun) interpolates log(alpha_bar) linearly between integer steps. Why log(alpha_bar):
    log(alpha_bar_t) = sum_{s<=t} log(1 - beta_s), so linear interpolation in it is the continuous
    process with a constant noise rate inside each step; it is exact at integers, keeps alpha_bar
    monotone in (0, 1), and `sigma` / `t_from_sigma` are then exact inverses of each other.
    """

    name: str
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    log_alphas_cumprod: torch.Tensor = field(init=False)
    _on_device: dict = field(init=False)  # device -> alphas_cumprod copy, for `alpha_bar` of on-device t

    def __post_init__(self) -> None:
        assert self.betas.dtype == torch.float64 and self.betas.ndim == 1, "tables must be 1-D float64"
        assert self.alphas_cumprod.shape == self.betas.shape
        object.__setattr__(self, "log_alphas_cumprod", torch.log(self.alphas_cumprod))
        object.__setattr__(self, "_on_device", {})

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, timesteps={self.timesteps})"

    @property
    def timesteps(self) -> int:
        """T, the number of training steps."""
        return self.betas.shape[0]

    def _index(self, t) -> tuple[torch.Tensor, bool]:
        """t as a CPU tensor (int64 or float64) checked to lie in [0, T-1], and whether it is integral."""
        t = torch.as_tensor(t).detach().cpu()
        integral = not (t.is_floating_point() or t.is_complex())
        t = t.long() if integral else t.double()
        if t.numel() and (t.min() < 0 or t.max() > self.timesteps - 1):
            raise UserError(
                f"Timestep {t.min().item() if t.min() < 0 else t.max().item()} is outside this schedule's "
                f"range [0, {self.timesteps - 1}]."
            )
        return t, integral

    def log_alpha_bar(self, t) -> torch.Tensor:
        """log(alpha_bar_t) in float64 for integer or fractional t (any shape), linear between steps."""
        t, integral = self._index(t)
        if integral:
            return self.log_alphas_cumprod[t]
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.timesteps - 1)
        w = t - lo
        return torch.lerp(self.log_alphas_cumprod[lo], self.log_alphas_cumprod[hi], w)

    def alpha_bar(self, t) -> torch.Tensor:
        """alpha_bar_t in (0, 1), float64, same shape as t; exact table values at integer t.

        Integer t on a CUDA device (the training loss draws it there) indexes a copy of the table on that
        device, with no range check: moving t to the CPU to check it would stall the GPU once per step.
        The result is then on t's device; every other t gives a CPU tensor.
        """
        if torch.is_tensor(t) and t.device.type == "cuda" and not (t.is_floating_point() or t.is_complex()):
            table = self._on_device.get(t.device)
            if table is None:
                table = self._on_device[t.device] = self.alphas_cumprod.to(t.device)
            return table[t]
        t, integral = self._index(t)
        if integral:
            return self.alphas_cumprod[t]
        exact = self.alphas_cumprod[t.floor().long()]
        return torch.where(t == t.floor(), exact, torch.exp(self.log_alpha_bar(t)))

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar), float64."""
        ab = self.alpha_bar(t)
        return ab / (1 - ab)

    def log_snr(self, t) -> torch.Tensor:
        """log SNR = 2 * lambda, where lambda = log(alpha/sigma) is DPM-Solver's time variable; float64."""
        return -torch.log(torch.expm1(-self.log_alpha_bar(t)))

    def sigma(self, t) -> torch.Tensor:
        """VE noise level sqrt((1 - alpha_bar)/alpha_bar), x_ve = x_vp / sqrt(alpha_bar) = x0 + sigma eps."""
        return torch.sqrt(torch.expm1(-self.log_alpha_bar(t)))

    def t_from_sigma(self, sigma) -> torch.Tensor:
        """Inverse of `sigma(t)`: fractional t (float64) for VE noise levels `sigma` (any shape).

        Levels outside [sigma(0), sigma(T-1)] map to the nearer end (0 or T-1).
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu()
        target = -torch.log1p(sigma**2)  # log(alpha_bar) wanted; the table decreases with t
        table = self.log_alphas_cumprod
        hi = torch.searchsorted(-table, -target.reshape(-1)).reshape(target.shape)
        hi = hi.clamp(1, self.timesteps - 1)
        lo = hi - 1
        frac = (table[lo] - target) / (table[lo] - table[hi])
        return (lo + frac).clamp(0, self.timesteps - 1)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        """(alpha, sigma_vp) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for one timestep, as Python floats."""
        ab = self.alpha_bar(torch.tensor(t, dtype=torch.float64)).item()
        return math.sqrt(ab), math.sqrt(1 - ab)

    def network_time(self, t):
        """What the network's time input gets for timestep t: the DDPM index itself."""
        return t

    def coefficients(self, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, sigma_vp) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for per-sample t (B,) or a scalar t.

        Computed in float64, then cast to `like`'s dtype/device and shaped (B, 1, ..., 1) to broadcast
        against `like` (B, C, H, W).
        """
        ab = self.alpha_bar(t)
        shape = (-1,) + (1,) * (like.ndim - 1) if ab.ndim else ()
        alpha = ab.sqrt().to(like.device, like.dtype).reshape(shape)
        sigma = (1 - ab).sqrt().to(like.device, like.dtype).reshape(shape)
        return alpha, sigma

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """Ho et al. (2020) eq. 4: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

        x0, eps: (B, C, H, W); t: (B,) int or float timesteps (or a scalar). Returns x_t in x0's dtype.
        """
        alpha, sigma = self.coefficients(t, x0)
        return alpha * x0 + sigma * eps


def make_schedule(name: str = "linear", timesteps: int = 1000) -> NoiseSchedule:
    """The named schedule ('linear' | 'cosine') with `timesteps` steps."""
    if name not in SCHEDULES:
        raise UserError(f"Unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}.")
    if not isinstance(timesteps, int) or timesteps < 2:
        raise UserError(f"A noise schedule needs an integer number of timesteps >= 2, got {timesteps!r}.")
    betas = linear_betas(timesteps) if name == "linear" else cosine_betas(timesteps)
    return NoiseSchedule(name, betas, torch.cumprod(1 - betas, dim=0))


def timestep_grid(timesteps: int, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """A strictly descending int64 grid of `steps` timesteps in [0, T-1] (Lin et al. 2023, table 2).

    With T=1000, steps=10:
      leading  : k * (T // steps), k = steps-1..0   -> 900, 800, ..., 100, 0. Hits t=0, never T-1:
                 sampling starts at a lower noise level than training ended at.
      linspace : round(linspace(T-1, 0, steps))     -> 999, 888, 777, ..., 111, 0. Hits both ends
                 (steps=1 gives [T-1], not numpy's [0]: one step must start from noise).
      trailing : round(T - k * T/steps) - 1, k = 0..steps-1 -> 999, 899, ..., 199, 99. Starts at T-1;
                 the lowest point is T/steps - 1 and the sampler's final step goes from there to the data.
    Every sampler evaluates the network at each grid point, then takes one last step to the data.
    """
    if spacing not in SPACINGS:
        raise UserError(f"Unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}.")
    if not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise UserError(f"The number of sampling steps must be between 1 and {timesteps}, got {steps!r}.")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "leading":
        grid = (steps - 1 - k) * (timesteps // steps)
    elif spacing == "linspace":
        grid = torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round()
    else:
        grid = (timesteps - k * timesteps / steps).round() - 1
    return grid.long()


def karras_timesteps(
    schedule: NoiseSchedule, steps: int, rho: float = 7.0, sigma_max: float | None = 80.0
) -> torch.Tensor:
    """Karras et al. (2022) eq. 5 sigmas from min(sigma_max, sigma(T-1)) to sigma(0), as fractional t.

    Returns a strictly descending float64 grid ending at t=0 that any sampler accepts; the spacing in
    sigma^(1/rho) concentrates steps at low noise where the image detail is decided. The default
    sigma_max=80 is EDM's: the cosine schedule's clipped last step jumps to sigma(T-1) ~ 2e4, and a
    grid starting there would spend most of its steps above any useful noise level (None = sigma(T-1)).
    """
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"The number of sampling steps must be at least 1, got {steps!r}.")
    T = schedule.timesteps
    top = schedule.sigma(T - 1).item()
    top = top if sigma_max is None else min(top, float(sigma_max))
    if steps == 1:
        return schedule.t_from_sigma(torch.tensor([top], dtype=torch.float64))
    inv_max, inv_min = top ** (1 / rho), schedule.sigma(0).item() ** (1 / rho)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    t = schedule.t_from_sigma((inv_max + ramp * (inv_min - inv_max)) ** rho)
    t[-1] = 0.0  # pin the end exactly; the inverse is only accurate to rounding
    return t


def sampling_grid(schedule: NoiseSchedule, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """The descending grid a sampler walks: `timestep_grid` for 'leading' | 'linspace' | 'trailing', or
    `karras_timesteps` for 'karras'."""
    if spacing == "karras":
        return karras_timesteps(schedule, steps)
    if spacing not in SPACINGS:
        raise UserError(f"Unknown timestep spacing {spacing!r}; choose one of: {', '.join((*SPACINGS, 'karras'))}.")
    return timestep_grid(schedule.timesteps, steps, spacing)
