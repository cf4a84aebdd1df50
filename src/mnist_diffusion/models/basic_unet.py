"""The seed tutorial's `BasicUNet`, exactly as written (309,057 parameters).

Three 5x5 convs down (1->32->64->64, max-pool after the first two, whose outputs are kept as skips),
three up (64->64->32->1, upsample x2 then add the popped skip before the 2nd and 3rd), SiLU after every
conv including the last. No noise-level input: the seed's model must guess how noisy its input is.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicUNet(nn.Module):
    """x: (B, C, 28, 28) -> (B, C_out, 28, 28). Any H, W divisible by 4."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.down_layers = nn.ModuleList(
            [
                nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
                nn.Conv2d(32, 64, kernel_size=5, padding=2),
                nn.Conv2d(64, 64, kernel_size=5, padding=2),
            ]
        )
        self.up_layers = nn.ModuleList(
            [
                nn.Conv2d(64, 64, kernel_size=5, padding=2),
                nn.Conv2d(64, 32, kernel_size=5, padding=2),
                nn.Conv2d(32, out_channels, kernel_size=5, padding=2),
            ]
        )
        self.act = nn.SiLU()
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, layer in enumerate(self.down_layers):
            x = self.act(layer(x))
            if i < 2:
                skips.append(x)
                x = self.downscale(x)
        for i, layer in enumerate(self.up_layers):
            if i > 0:
                x = self.upscale(x)
                x = x + skips.pop()  # out of place: autograd-safe where the seed wrote `x += ...`
            x = self.act(layer(x))
        return x
