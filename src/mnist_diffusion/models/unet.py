"""A small time- and class-conditioned U-Net, shaped for CPU speed: for 28x28 images and for small latents.

Default layout (channels (32, 64, 128), blocks_per_level=1, mid_block and mid_attention on); "+" adds a skip:

    encoder  x (B,C,28,28) -stem conv-> 32@28 -stride-2 conv-> 64@14 -res-> -stride-2 conv-> 128@7 -res->
    middle   res 128@7, self-attention at 7x7
    decoder  res 128@7 -1x1, up-> +skip@14 -res 64@14 -1x1, up-> +skip@28 (stem) -res 32@28
             -> GroupNorm, SiLU, conv -> (B,C,28,28)

The same network runs on the (4, 7, 7) latents of latent diffusion (the `ldm` recipe: widths (64, 96), no
middle residual block): a stride-2 conv halves 7 to 4 (rounding up), and every up-step resizes to the size of
the skip it meets, so any input size works, odd ones included.

Choices that make it several times faster on a CPU than a textbook DDPM U-Net of similar size:
- The encoder has one residual block fewer at 28x28 than at the other levels (none by default: the
  stem conv's output is the 28x28 skip). A 3x3 conv at full resolution does as many multiply-adds as one
  at 7x7 with 4x the channels, holds 1/16 of the parameters, and on a CPU runs markedly slower.
- Skips are added, not concatenated, so no conv ever reads a doubled width and no 1x1 skip-projections
  are needed.
- Upsampling changes the width with a 1x1 conv at the low resolution, then repeats pixels (nearest).
- A single self-attention layer, in the middle at 7x7 (49 tokens); none at 14x14. One middle residual
  block (not the textbook two): the bottom level's encoder and decoder blocks stand around it.

The noise level enters every residual block through a per-block linear projection of one shared
embedding, MLP(sinusoid(t)) + class embedding (Ho et al. 2020; Ho & Salimans 2022 for the "no label"
entry). The network knows nothing of noise schedules: it maps (x_t, t, label) to whatever the training
target is (eps, x0 or v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.blocks import Conditioning, ResBlock, SelfAttention2d, Upsample, group_norm


class UNet(Conditioning, nn.Module):
    """forward(x: (B,C,H,W), t: (B,) float timesteps in [0, T-1], labels: (B,) long | None,
    guidance: (B,) float | None, only with cfg.guidance_input, interval: (B,) float | None, only with
    cfg.interval_input) -> (B,C,H,W).

    C = cfg.in_channels (1 for MNIST digits, 4 for the autoencoder's latents); any H, W >= 1. `num_classes` is 0 for an unconditional net, which refuses labels. A
    conditional net has num_classes + 1 label embeddings: index `num_classes` means "no label" (for
    classifier-free guidance) and is used when labels is None. The output conv starts at zero, so a fresh
    net predicts 0 everywhere.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if not cfg.channels:
            raise ValueError("ModelConfig.channels must list at least one width")
        self.in_channels = cfg.in_channels
        widths = tuple(cfg.channels)
        dim = cfg.embed_dim
        self.init_conditioning(dim, cfg.num_classes, cfg.guidance_input, cfg.interval_input)

        def res(width: int) -> ResBlock:
            return ResBlock(width, width, dim, cfg.groups, cfg.dropout)

        def blocks(count: int, width: int) -> nn.ModuleList:
            return nn.ModuleList(res(width) for _ in range(count))

        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        # Encoder: the full-resolution level gets one block fewer (the stem stands in for it).
        self.down_blocks = nn.ModuleList(
            blocks(cfg.blocks_per_level - 1 if level == 0 else cfg.blocks_per_level, width)
            for level, width in enumerate(widths)
        )
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1) for i in range(len(widths) - 1)
        )

        # Middle at the bottom level: a residual block, then self-attention over its positions (49 at 7x7).
        if cfg.mid_block:
            self.mid_block = res(widths[-1])
        self.mid_attn = SelfAttention2d(widths[-1], cfg.groups) if cfg.mid_attention else nn.Identity()

        # Decoder, listed from the bottom level up; upsamples[i] leads from level i + 1 to level i.
        self.up_blocks = nn.ModuleList(blocks(cfg.blocks_per_level, width) for width in reversed(widths))
        self.upsamples = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(len(widths) - 1))

        self.out_norm = group_norm(widths[0], cfg.groups)
        self.out_conv = nn.Conv2d(widths[0], cfg.in_channels, 3, padding=1)
        # Zero-initialised output: the untrained net predicts 0, a safe start for eps, x0 and v targets.
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        interval: torch.Tensor | None = None,
    ) -> torch.Tensor:
        emb = self.embed(t, labels, x.shape[0], guidance, interval)
        h = self.stem(x)
        skips = []
        for level, level_blocks in enumerate(self.down_blocks):
            for block in level_blocks:
                h = block(h, emb)
            if level < len(self.downsamples):
                skips.append(h)
                h = self.downsamples[level](h)

        # The bottom level needs no skip: its encoder output flows on through the middle's residual paths.
        if hasattr(self, "mid_block"):
            h = self.mid_block(h, emb)
        h = self.mid_attn(h)

        for i, level_blocks in enumerate(self.up_blocks):
            if i > 0:
                skip = skips.pop()
                h = self.upsamples[-i](h, skip.shape[-2:]) + skip
            for block in level_blocks:
                h = block(h, emb)

        return self.out_conv(F.silu(self.out_norm(h)))
