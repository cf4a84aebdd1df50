"""The DDPM training objective: noise a clean batch at a random timestep and regress the target."""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch

from mnist_diffusion.config import Weighting
from mnist_diffusion.diffusion.denoiser import check_prediction, net_time, num_classes_of, target_for
from mnist_diffusion.diffusion.schedule import NoiseSchedule
from mnist_diffusion.errors import UserError

WEIGHTINGS = typing.get_args(Weighting)


def min_snr_weight(snr: torch.Tensor, prediction: str, gamma: float = 5.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for a loss written in `prediction`'s space.

    The paper weights the x0-space loss by min(SNR, gamma). Since ||x0 err||^2 = ||eps err||^2 / SNR
    and ||v err||^2 = ||eps err||^2 (SNR + 1) / SNR, the same weighting reads
    eps: min(SNR, gamma) / SNR,  x0: min(SNR, gamma),  v: min(SNR, gamma) / (SNR + 1).
    """
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    if prediction == "v":
        return clipped / (snr + 1)
    check_prediction(prediction)
    raise AssertionError("unreachable")


def drop_labels(
    labels: torch.Tensor, num_classes: int, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`labels` (B,) with each entry replaced by the "no label" class `num_classes` with probability p.

    Training on both lets one network give the conditional and the unconditional prediction that
    classifier-free guidance combines (Ho & Salimans 2022).
    """
    if p <= 0:
        return labels
    device = generator.device if generator is not None else labels.device
    drop = (torch.rand(labels.shape, generator=generator, device=device) < p).to(labels.device)
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def diffusion_loss(
    net: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    prediction: str = "eps",
    labels: torch.Tensor | None = None,
    weighting: str = "uniform",
    gamma: float = 5.0,
    label_dropout: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ho et al. (2020) alg. 1, for eps, x0 or v targets: t ~ U{0..T-1}, eps ~ N(0, I), MSE to the target.

    x0: (B, C, H, W) clean data; labels: (B,) long or None. Random draws come from `generator`, in
    the order t, eps, label dropout, on the generator's device (give it x0's device to avoid copies).
    Returns (loss, per_sample_loss, t): loss = per_sample_loss.mean(); per_sample_loss (B,) float32
    is the weighted per-image MSE (weights from `min_snr_weight` when weighting='min_snr'); t (B,)
    int64 on the generator's device, for logging the loss by timestep.
    """
    check_prediction(prediction)
    if weighting not in WEIGHTINGS:
        raise UserError(f"Unknown loss weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}.")
    batch = x0.shape[0]
    device = generator.device if generator is not None else x0.device
    t = torch.randint(0, schedule.timesteps, (batch,), generator=generator, device=device)
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype).to(x0.device)
    num_classes = num_classes_of(net)
    if labels is not None and num_classes and label_dropout > 0:
        labels = drop_labels(labels, num_classes, label_dropout, generator)

    alpha, sigma = schedule.coefficients(t, x0)
    x_t = alpha * x0 + sigma * eps  # q_sample, sharing the coefficients with the target
    target = target_for(prediction, x0, eps, alpha, sigma)
    out = net(x_t, net_time(t, x0), labels)
    per_sample = (out.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if weighting == "min_snr":
        per_sample = per_sample * min_snr_weight(schedule.snr(t), prediction, gamma).to(per_sample)
    return per_sample.mean(), per_sample, t
