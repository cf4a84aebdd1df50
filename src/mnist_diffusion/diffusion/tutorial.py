"""The toy diffusion of the tutorial the project started from ("Generating MNIST with a diffusion model", the
`seed` recipe): blend images with uniform noise, predict the clean image, and sample by repeatedly moving a
fraction of the way towards the prediction (`samplers.sample_tutorial`, registered as the 'tutorial' sampler).

Data live in [0, 1]; the network `net(x) -> x0` gets no noise level and must guess how noisy x is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnist_diffusion.diffusion.samplers import sample_tutorial  # its sampler lives with the others, in the registry

__all__ = ["corrupt", "sample_tutorial", "tutorial_loss"]


def _view(amount, x: torch.Tensor) -> torch.Tensor:
    """amount (B,) shaped (B, 1, ..., 1) to broadcast over x (B, C, H, W); a scalar stays a scalar."""
    amount = torch.as_tensor(amount).to(x)
    return amount.reshape((-1,) + (1,) * (x.ndim - 1)) if amount.ndim else amount


def corrupt(x: torch.Tensor, amount: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x * (1 - amount) + noise * amount with noise ~ U[0, 1) per pixel; amount (B,) (or a scalar) in [0, 1].

    amount 0 returns x, amount 1 pure noise. Noise comes from `generator` when given (reproducible
    runs), else from torch's global generator like the seed's `torch.rand_like`.
    """
    if generator is None:
        noise = torch.rand_like(x)
    else:
        noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    a = _view(amount, x)
    return x * (1 - a) + noise * a


def tutorial_loss(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The tutorial's objective: MSE(net(corrupt(x, amount)), x) with amount ~ U[0, 1) per image.

    x: (B, C, H, W) in [0, 1]. Draws amount, then the noise, from `generator` (or the global one).
    Returns the scalar loss.
    """
    if generator is None:
        amount = torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
    else:
        amount = torch.rand(x.shape[0], generator=generator, device=generator.device, dtype=x.dtype)
    noisy = corrupt(x, amount.to(x.device), generator)
    return torch.nn.functional.mse_loss(net(noisy), x)
