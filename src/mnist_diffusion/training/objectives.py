"""The loss a run trains on, chosen from its config: the tutorial's x0 regression, the DDPM or flow-matching
objective (on pixels, or on a frozen autoencoder's latents), or the autoencoder's own reconstruction + KL loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mnist_diffusion.config import ConfigError, RunConfig
from mnist_diffusion.diffusion.ddpm_loss import diffusion_loss
from mnist_diffusion.diffusion.flow import flow_matching_loss
from mnist_diffusion.diffusion.meanflow import meanflow_loss
from mnist_diffusion.diffusion.schedule import make_schedule
from mnist_diffusion.diffusion.tutorial import tutorial_loss
from mnist_diffusion.latent import encode_latents, load_autoencoder
from mnist_diffusion.models.autoencoder import Autoencoder
from mnist_diffusion.training.distill import Teacher, distill_objective

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], dict[str, Any]]


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over each sample's latent elements, (B, C, H, W) -> (B,)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)


def autoencoder_loss(
    net: Autoencoder, x: torch.Tensor, kl_weight: float, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Reconstruction L1 + kl_weight * KL, both as sums per image divided by the image's pixel count.

    Summing both terms per image (then dividing by the same pixel count, so the learning rate does not
    depend on the image size) is the weighting of Rombach et al.'s KL autoencoders, where kl_weight = 1e-6
    keeps the latent close to a deterministic code with a mild pull towards N(0, I). L1 rather than MSE:
    it blurs strokes less. Returns {"loss", "l1", "kl"} (the last two detached, per-batch means).
    """
    x_hat, mean, logvar = net(x, generator)
    pixels = x[0].numel()
    l1 = (x_hat.float() - x.float()).abs().flatten(1).sum(dim=1) / pixels
    kl = kl_to_standard_normal(mean.float(), logvar.float()) / pixels
    loss = (l1 + kl_weight * kl).mean()
    return {"loss": loss, "l1": l1.mean().detach(), "kl": kl.mean().detach()}


def make_objective(cfg: RunConfig, device: torch.device, teacher: Teacher | None = None) -> Objective:
    """A function (net, x, labels, generator) -> {"loss", and for DDPM "per_sample", "t"}; `teacher`, for a
    distillation run, is its loaded teacher."""
    if cfg.diffusion.kind == "tutorial":

        def tutorial_objective(net, x, labels, generator):
            return {"loss": tutorial_loss(net, x, generator=generator)}

        return tutorial_objective

    if cfg.diffusion.kind == "autoencoder":
        if cfg.data.value_range != "signed":
            raise ConfigError(
                "The autoencoder's decoder ends in tanh and models images in [-1, 1]; "
                "set --set data.value_range=signed."
            )

        def autoencoder_objective(net, x, labels, generator):
            return autoencoder_loss(net, x, cfg.diffusion.kl_weight, generator)

        return autoencoder_objective

    if cfg.distill is not None:  # a few-step student regressing onto its guided teacher
        return distill_objective(cfg, device, teacher)

    d, conditional = cfg.diffusion, cfg.model.num_classes > 0
    if d.kind == "flow":

        def objective(net, x, labels, generator):
            loss, per_sample, t = flow_matching_loss(
                net,
                x,
                d.prediction,
                labels=labels if conditional else None,
                num_classes=cfg.model.num_classes,
                label_dropout=cfg.train.label_dropout if conditional else 0.0,
                time_sampling=d.time_sampling,
                mean=d.logit_mean,
                std=d.logit_std,
                generator=generator,
            )
            return {"loss": loss, "per_sample": per_sample, "t_fraction": t}

    elif d.kind == "meanflow":
        m = cfg.meanflow

        def objective(net, x, labels, generator):
            loss, per_sample, t = meanflow_loss(
                bare_module(net),  # a JVP does not pass through DDP: the loop averages the gradients itself
                x,
                labels if conditional else None,
                num_classes=cfg.model.num_classes,
                label_dropout=cfg.train.label_dropout if conditional else 0.0,
                guidance=m.guidance,
                r_ratio=m.r_ratio,
                time_sampling=d.time_sampling,
                mean=d.logit_mean,
                std=d.logit_std,
                weight_power=m.weight_power,
                weight_eps=m.weight_eps,
                tangent=m.tangent,
                generator=generator,
            )
            return {"loss": loss, "per_sample": per_sample, "t_fraction": t, "gradients_unsynced": True}

    else:
        schedule = make_schedule(d.schedule, d.timesteps)

        def objective(net, x, labels, generator):
            loss, per_sample, t = diffusion_loss(
                _WithClasses(net, cfg.model.num_classes),
                x,
                schedule,
                d.prediction,
                labels=labels if conditional else None,
                weighting=d.loss_weighting,
                gamma=d.min_snr_gamma,
                label_dropout=cfg.train.label_dropout if conditional else 0.0,
                generator=generator,
            )
            return {"loss": loss, "per_sample": per_sample, "t": t}

    if cfg.latent is not None:  # latent diffusion (Rombach et al. 2022): the same loss on scaled latents
        autoencoder = load_autoencoder(cfg.latent, device)

        def latent_objective(net, x, labels, generator):
            return objective(net, encode_latents(autoencoder, x, cfg.latent.scale), labels, generator)

        return latent_objective
    return objective


class _WithClasses:
    """`net` as `diffusion_loss` sees it, with the `num_classes` it reads to decide on label dropout.

    DDP and torch.compile wrappers do not pass plain attributes such as `num_classes` through; without
    this, a class-conditional run under torchrun would silently never drop a label (and so never learn
    the unconditional prediction that classifier-free guidance needs).
    """

    def __init__(self, net: nn.Module, num_classes: int):
        self.net, self.num_classes = net, num_classes

    def __call__(self, *args):
        return self.net(*args)


def bare_module(net: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while hasattr(net, "module") or hasattr(net, "_orig_mod"):
        net = getattr(net, "module", None) or net._orig_mod
    return net
