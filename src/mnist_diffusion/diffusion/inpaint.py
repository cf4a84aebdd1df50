"""Completing partly known samples (inpainting) with an unconditionally trained denoiser.

Notation: `known` (B, C, H, W) is the clean sample where it is known, `mask` (B, C, H, W) is 1 there and 0 where
the sampler must fill in; both in the sampler's space (the data range of pixels, or latents).

- Replacement (Song et al. 2021, "Score-based generative modeling through SDEs", app. I.2): at every step the
  known region of x_t is put back on the forward process of the known sample, x_t <- mask * q(x_t | known)
  + (1 - mask) * x_t, with fresh noise each time, so the sampler only ever invents the unknown region while
  seeing a consistent known one. `replacement` makes this a sampling callback, so it works inside every sampler.
- RePaint (Lugmayr et al. 2022, alg. 1): the same replacement, but each step is taken `resample` times; between
  the attempts the sample is noised back up to the earlier step (x_t = sqrt(ab_t / ab_s) x_s + sqrt(1 - ab_t /
  ab_s) eps), which lets the generated region harmonise with the known one. `sample_repaint` walks the grid
  with DDIM steps (eta 1: ancestral, as in the paper) and takes the replacement as its callback.
- x0 projection (`projection`): replace the known region of the denoiser's x0 estimate instead and rebuild
  x_t = alpha paste(x0) + sigma eps_hat with the step's own noise estimate; it needs no fresh noise and works
  where the mask lives in another space than the sampler (pixels over a latent model: `Pipeline.inpaint`
  decodes x0, pastes the known pixels and encodes again).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.samplers import gaussian_like, prepare_grid
from mnist_diffusion.diffusion.schedule import NoiseSchedule
from mnist_diffusion.diffusion.steps import Callback, visit


def replacement(
    schedule: NoiseSchedule, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
) -> Callback:
    """A sampling callback that puts the known region of x_t back on q(x_t | known) at every step."""

    def callback(step: dict) -> torch.Tensor:
        alpha, sigma = schedule.alpha_sigma(step["t"])
        x_t = step["x_t"]
        return mask * (alpha * known + sigma * gaussian_like(x_t, generator)) + (1 - mask) * x_t

    return callback


def projection(schedule: NoiseSchedule, paste: Callable[[torch.Tensor], torch.Tensor]) -> Callback:
    """A sampling callback that rebuilds x_t around a corrected x0 estimate: x_t <- alpha paste(x0) + sigma eps_hat,
    with eps_hat = (x_t - alpha x0) / sigma the step's own noise estimate, i.e. x_t + alpha (paste(x0) - x0);
    `paste(x0)` puts the known region in."""

    def callback(step: dict) -> torch.Tensor:
        alpha, _ = schedule.alpha_sigma(step["t"])
        return step["x_t"] + alpha * (paste(step["x0"]) - step["x0"])

    return callback


@torch.no_grad()
def sample_repaint(
    denoiser: Denoiser,
    x: torch.Tensor,
    timesteps,
    resample: int = 2,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """RePaint's resampling (Lugmayr et al. 2022, alg. 1, jump length 1) over a descending grid, DDIM(eta) steps.

    Every step t -> s is taken `resample` times; before each retry the sample is noised back up from s to t.
    The known region comes in through `callback` (e.g. `replacement`), called at every attempt like a sampler's
    callback (with `attempt` added to the step dict); a replaced x_t is stepped on with its own eps given the
    same x0 estimate, as in `sample_ddim`. Returns the final x0 estimate; network evaluations are about
    `resample` times the grid's length.
    """
    ts, ab = prepare_grid(denoiser.schedule, timesteps)
    ab_t, ab_s = ab[:-1], ab[1:]
    sig = eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()  # DDIM eq. 16
    c_x0, c_eps = ab_s.sqrt().tolist(), (1 - ab_s - sig**2).clamp(min=0).sqrt().tolist()
    std, a_t, s_t = sig.tolist(), ab_t.sqrt().tolist(), (1 - ab_t).sqrt().tolist()
    up_x, up_noise = (ab_t / ab_s).sqrt().tolist(), (1 - ab_t / ab_s).clamp(min=0).sqrt().tolist()  # q(x_t | x_s)
    x0 = x
    for i, t in enumerate(ts):
        for attempt in range(1 if i == len(ts) - 1 else resample):
            if attempt:
                x = up_x[i] * x + up_noise[i] * gaussian_like(x, generator)
            x0, eps = denoiser(x, t)
            step_callback = None if callback is None else (lambda step, a=attempt: callback({**step, "attempt": a}))
            replaced = visit(step_callback, i, t, len(ts), x, x0)
            if replaced is not x:
                eps = (replaced - a_t[i] * x0) / s_t[i]
            x = c_x0[i] * x0 + c_eps[i] * eps
            if std[i] > 0:
                x = x + std[i] * gaussian_like(x, generator)
    return x0
