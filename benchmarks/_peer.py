"""The peer: diffusers' UNet2DModel trained and sampled as in the Hugging Face diffusion course, unit 1.

Model: the course's MNIST-sized UNet2DModel (the same constructor arguments as `course_unet()` in
unet_throughput.py; 1,707,009 parameters), unconditional. Training: `DDPMScheduler(num_train_timesteps=1000,
beta_schedule="squaredcos_cap_v2")`, a uniformly drawn timestep per image, MSE between predicted and true
noise, AdamW at lr 4e-4, no warm-up, no gradient clipping, no EMA (the course keeps none), images in [-1, 1].
Sampling: `DDIMScheduler.from_config` of the training scheduler (eta 0, so deterministic), 50 steps.

Needs diffusers (a benchmark-only dependency): pip install -r benchmarks/requirements.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.data import to_uint8
from mnist_diffusion.pipeline import initial_noise

LR = 4e-4  # the course's AdamW learning rate
TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"  # the course's cosine schedule (Nichol & Dhariwal 2021)
SAMPLING_STEPS = 50


def course_unet() -> nn.Module:
    """UNet2DModel as configured in the Hugging Face diffusion course, unit 1 (about 1.7M parameters)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        layers_per_block=2,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )


def course_scheduler():
    """The course's training noise scheduler."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule=BETA_SCHEDULE)


class PeerTrainer:
    """One course training step at a time on batches of [-1, 1] images (B, 1, 28, 28)."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.net = course_unet()
        self.net.train()
        self.scheduler = course_scheduler()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=LR)
        self.generator = torch.Generator().manual_seed(seed + 1)

    def train_step(self, x0: torch.Tensor) -> float:
        """Noise x0 to a random timestep, predict the noise, MSE, AdamW step; returns the loss."""
        eps = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, TIMESTEPS, (x0.shape[0],), generator=self.generator)
        x_t = self.scheduler.add_noise(x0, eps, t)
        loss = F.mse_loss(self.net(x_t, t, return_dict=False)[0], eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    def save(self, path: Path) -> None:
        """The weights that sample (the raw weights: the course keeps no EMA), as safetensors."""
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path))


def load_peer(path: Path) -> nn.Module:
    """A course UNet2DModel in eval mode with the weights saved by `PeerTrainer.save`."""
    from safetensors.torch import load_file

    net = course_unet()
    net.load_state_dict(load_file(str(path)))
    return net.eval()


@torch.inference_mode()
def sample_peer(net: nn.Module, n: int, steps: int = SAMPLING_STEPS, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """n unconditional samples as uint8 (n, 28, 28) by DDIM (eta 0); image i starts from noise seeded seed + i."""
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(course_scheduler().config)
    ddim.set_timesteps(steps)
    out = []
    for start in range(0, n, batch_size):
        x = initial_noise(min(batch_size, n - start), (1, 28, 28), seed, "gaussian", torch.device("cpu"), start)
        for t in ddim.timesteps:
            x = ddim.step(net(x, t, return_dict=False)[0], t, x).prev_sample
        out.append(to_uint8(x, "signed"))
    return np.concatenate(out)
