"""The noise process, the denoiser wrapper, the training losses and the samplers.

Pure maths: nothing here knows the network architecture, the data or the command line. A network
is any callable `net(x_t, t, labels) -> out` (out shaped like x_t: an eps, x0 or v prediction);
class-conditional networks expose `net.num_classes`, and the label `num_classes` means "no label".

Notation (code name -> paper symbol):
    x0           x_0, clean data (Ho et al. 2020)
    x_t          x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, the VP noised sample
    t            DDPM timestep index in [0, T-1] (Ho's t - 1); fractional between steps; the data is
                 "below" t = 0, where alpha_bar = 1
    eps          epsilon ~ N(0, I), the noise
    v            v = alpha eps - sigma x_0 (Salimans & Ho 2022)
    betas        beta_t; alphas_cumprod / alpha_bar: alpha_bar_t = prod_{s<=t} (1 - beta_s)
    alpha        alpha_t = sqrt(alpha_bar_t) (DPM-Solver's alpha_t; DDIM's sqrt(alpha_t))
    sigma        in VP formulas (denoiser, DDIM, DPM-Solver): sigma_t = sqrt(1 - alpha_bar_t);
                 `NoiseSchedule.sigma(t)` and Heun: the VE level sqrt((1 - alpha_bar)/alpha_bar)
                 of Karras et al. 2022, with x_ve = x_vp / sqrt(alpha_bar)
    snr          alpha_bar / (1 - alpha_bar) = 1 / sigma_ve^2
    lam          lambda_t = log(alpha_t / sigma_t) = log_snr / 2 (Lu et al. 2022)
    guidance     w in eps_u + w (eps_c - eps_u) (Ho & Salimans 2022); 1 = plain conditional
"""

from mnist_diffusion.diffusion.ddpm_loss import WEIGHTINGS, diffusion_loss, drop_labels, min_snr_weight
from mnist_diffusion.diffusion.denoiser import (
    PREDICTIONS,
    Denoiser,
    eps_from_v,
    eps_from_x0,
    target_for,
    to_x0_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from mnist_diffusion.diffusion.samplers import (
    SAMPLERS,
    SamplerSpec,
    sample,
    sample_consistency,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_heun,
    sample_tutorial,
    visit,
)
from mnist_diffusion.diffusion.schedule import (
    SCHEDULES,
    SPACINGS,
    NoiseSchedule,
    karras_timesteps,
    make_schedule,
    timestep_grid,
)
from mnist_diffusion.diffusion.tutorial import corrupt, tutorial_loss

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "SPACINGS",
    "WEIGHTINGS",
    "Denoiser",
    "NoiseSchedule",
    "SamplerSpec",
    "corrupt",
    "diffusion_loss",
    "drop_labels",
    "eps_from_v",
    "eps_from_x0",
    "karras_timesteps",
    "make_schedule",
    "min_snr_weight",
    "sample",
    "sample_consistency",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_heun",
    "sample_tutorial",
    "target_for",
    "timestep_grid",
    "to_x0_eps",
    "tutorial_loss",
    "v_from_x0_eps",
    "visit",
    "x0_from_eps",
    "x0_from_v",
]
