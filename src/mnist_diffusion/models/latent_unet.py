"""A time- and class-conditioned U-Net for small latents, e.g. the (4, 7, 7) latents of the autoencoder.

The pixel U-Net (`models.unet`) halves 28 -> 14 -> 7 and doubles back, which needs sizes divisible by two at
every level; a 7x7 latent halves to 4 (a stride-2 conv rounds up) and must come back to exactly 7, so here
every up-step resizes to the size of the skip it meets. Otherwise the layout and its CPU-speed choices are the
pixel U-Net's: no encoder block at the top level (the stem stands in), skips added rather than concatenated,
width changed by a 1x1 conv before upsampling, one self-attention layer at the bottom. For the `ldm` recipe's
widths (64, 96) with one block per level:

    encoder  z (B,C,7,7) -stem conv-> 64@7 -stride-2 conv-> 96@4 -res->
    middle   self-attention at 4x4 (16 tokens)
    decoder  res 96@4 -1x1, resize to 7-> +skip (stem) -res 64@7 -> GroupNorm, SiLU, conv -> (B,C,7,7)

Sampling runs the network twice per step (conditional and unconditional) for 20 steps, so its cost is what
makes latent diffusion fast or not. At these widths a forward pass costs 21.6 MFLOP per latent, against 197
for the pixel `ddpm-cond` U-Net and 65 for widths (64, 128) with two blocks per level, which made latent
sampling only ~2.5x faster than pixel sampling (benchmarks/results/ldm_vs_pixel.md).

The label convention (index num_classes = "no label", for classifier-free guidance) and the zero-initialised
output conv are the pixel U-Net's too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.blocks import Conditioning, ResBlock, SelfAttention2d, group_norm


class LatentUNet(Conditioning, nn.Module):
    """forward(z: (B,C,H,W), t: (B,) float timesteps in [0, T-1], labels: (B,) long | None) -> (B,C,H,W).

    Any H, W >= 1 (sizes round up when halving). C = `cfg.in_channels`, the latent's channels.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.channels:
            raise ValueError("ModelConfig.channels must list at least one width")
        self.in_channels = cfg.in_channels
        widths = tuple(cfg.channels)
        dim = cfg.embed_dim
        self.init_conditioning(dim, cfg.num_classes)

        def blocks(count: int, width: int) -> nn.ModuleList:
            return nn.ModuleList(ResBlock(width, width, dim, cfg.groups, cfg.dropout) for _ in range(count))

        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            blocks(cfg.blocks_per_level - 1 if level == 0 else cfg.blocks_per_level, width)
            for level, width in enumerate(widths)
        )
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(len(widths) - 1)
        )
        self.mid_attn = SelfAttention2d(widths[-1], cfg.groups) if cfg.attention_7x7 else nn.Identity()
        self.up_blocks = nn.ModuleList(blocks(cfg.blocks_per_level, width) for width in reversed(widths))
        self.up_convs = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(widths) - 1))
        self.out_norm = group_norm(widths[0], cfg.groups)
        self.out_conv = nn.Conv2d(widths[0], cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, labels, x.shape[0])
        h = self.stem(x)
        skips = []
        for level, level_blocks in enumerate(self.down_blocks):
            for block in level_blocks:
                h = block(h, emb)
            if level < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[level](h)
        h = self.mid_attn(h)
        for i, level_blocks in enumerate(self.up_blocks):
            if i > 0:
                skip = skips.pop()
                # 1x1 at the low resolution, then resize to the skip's size (4 -> 7, not 8).
                h = F.interpolate(self.up_convs[-i](h), size=skip.shape[-2:], mode="nearest") + skip
            for block in level_blocks:
                h = block(h, emb)
        return self.out_conv(F.silu(self.out_norm(h)))
