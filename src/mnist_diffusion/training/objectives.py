"""The loss a run trains on, chosen from its config: the seed's x0 regression, the DDPM objective (on pixels,
or on a frozen autoencoder's latents), or the autoencoder's own reconstruction + KL loss."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from mnist_diffusion.config import RunConfig

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator | None], dict[str, Any]]


def make_objective(cfg: RunConfig, device: torch.device) -> Objective:
    """A function (net, x, labels, generator) -> {"loss", and for DDPM "per_sample", "t"}."""
    if cfg.diffusion.kind == "seed":
        from mnist_diffusion.diffusion.seed import seed_loss

        def seed_objective(net, x, labels, generator):
            return {"loss": seed_loss(net, x, generator=generator)}

        return seed_objective

    if cfg.diffusion.kind == "autoencoder":
        from mnist_diffusion.config import ConfigError
        from mnist_diffusion.models.autoencoder import autoencoder_loss

        if cfg.data.value_range != "signed":
            raise ConfigError("The autoencoder's decoder ends in tanh and models images in [-1, 1]; "
                              "set --set data.value_range=signed.")

        def autoencoder_objective(net, x, labels, generator):
            return autoencoder_loss(net, x, cfg.diffusion.kl_weight, generator)

        return autoencoder_objective

    from mnist_diffusion.diffusion.objective import diffusion_loss
    from mnist_diffusion.diffusion.schedule import make_schedule

    d, conditional = cfg.diffusion, cfg.model.num_classes > 0
    schedule = make_schedule(d.schedule, d.timesteps)

    def ddpm_objective(net, x, labels, generator):
        loss, per_sample, t = diffusion_loss(
            _WithClasses(net, cfg.model.num_classes), x, schedule, d.prediction,
            labels=labels if conditional else None, weighting=d.loss_weighting,
            gamma=d.min_snr_gamma, label_dropout=cfg.train.label_dropout if conditional else 0.0, generator=generator,
        )
        return {"loss": loss, "per_sample": per_sample, "t": t}

    if cfg.latent is not None:  # latent diffusion (Rombach et al. 2022): the same loss on scaled latents
        from mnist_diffusion.latent import load_autoencoder

        autoencoder = load_autoencoder(cfg.latent, device)

        def latent_objective(net, x, labels, generator):
            with torch.no_grad():
                z = autoencoder.encode(x) * cfg.latent.scale
            return ddpm_objective(net, z, labels, generator)

        return latent_objective
    return ddpm_objective


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
