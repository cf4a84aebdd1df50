"""The loss a run trains on, chosen from its config: the seed's x0 regression or the DDPM objective."""

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

    from mnist_diffusion.diffusion.objective import diffusion_loss
    from mnist_diffusion.diffusion.schedule import make_schedule

    d, conditional = cfg.diffusion, cfg.model.num_classes > 0
    schedule = make_schedule(d.schedule, d.timesteps)

    def ddpm_objective(net, x, labels, generator):
        loss, per_sample, t = diffusion_loss(
            net, x, schedule, d.prediction, labels=labels if conditional else None, weighting=d.loss_weighting,
            gamma=d.min_snr_gamma, label_dropout=cfg.train.label_dropout if conditional else 0.0, generator=generator,
        )
        return {"loss": loss, "per_sample": per_sample, "t": t}

    return ddpm_objective
