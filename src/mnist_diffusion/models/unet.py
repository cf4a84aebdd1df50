"""A small time- and class-conditioned U-Net for 28x28 images (DDPM backbone, Ho et al. 2020).

Layout for the default widths (32, 64, 128), one residual block per level:

    x (B,C,28,28) -conv-> 32@28 -res-> [skip] -down-> 64@14 -res-> [skip] -down-> 128@7 -res(+attn)-> [skip]
    middle: res, attn, res at 7x7
    up:     cat skip -> res(+attn) @7 -up-> cat skip -> res @14 -up-> cat skip -> res @28 -> norm, SiLU, conv -> (B,C,28,28)

The noise level enters every residual block through a per-block linear projection of one shared embedding:
MLP(sinusoid(t)) + class embedding. The network knows nothing of the noise schedule: it maps
(x_t, t, label) to whatever the training target is (eps, x0 or v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.blocks import (
    Downsample,
    ResBlock,
    SelfAttention2d,
    Upsample,
    group_norm,
    timestep_embedding,
)


class UNet(nn.Module):
    """forward(x: (B,C,H,W), t: (B,) float timesteps in [0, T-1], labels: (B,) long | None) -> (B,C,H,W).

    H and W must be divisible by 2 ** (len(cfg.channels) - 1) (28 works for up to three levels).
    `num_classes` is 0 for an unconditional net. A conditional net has num_classes + 1 label embeddings: index
    `num_classes` means "no label" (classifier-free guidance, Ho & Salimans 2022) and is used when labels is None.
    The output conv starts at zero, so a fresh net predicts 0 everywhere.
    """

    def __init__(self, cfg: ModelConfig, scale_shift: bool = False, attention_heads: int = 1):
        super().__init__()
        if not cfg.channels:
            raise ValueError("ModelConfig.channels must list at least one width")
        self.num_classes = cfg.num_classes
        self.in_channels = cfg.in_channels
        widths = tuple(cfg.channels)
        dim = cfg.embed_dim
        self._freq_dim = widths[0]

        self.time_mlp = nn.Sequential(nn.Linear(widths[0], dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, dim) if cfg.num_classes > 0 else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, dim, cfg.groups, cfg.dropout, scale_shift)

        def attn(level: int) -> nn.Module:
            last = level == len(widths) - 1
            return SelfAttention2d(widths[level], cfg.groups, attention_heads) if last and cfg.attention_7x7 \
                else nn.Identity()

        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        ch = widths[0]
        for level, width in enumerate(widths):
            self.down_blocks.append(nn.ModuleList([res(ch if i == 0 else width, width)
                                                   for i in range(cfg.blocks_per_level)]))
            ch = width
            self.down_attn.append(attn(level))
            if level < len(widths) - 1:
                self.downsamples.append(Downsample(width, widths[level + 1]))
                ch = widths[level + 1]

        self.mid1 = res(ch, ch)
        self.mid_attn = SelfAttention2d(ch, cfg.groups, attention_heads) if cfg.attention_7x7 else nn.Identity()
        self.mid2 = res(ch, ch)

        # One skip per level, concatenated once before the level's first block on the way up.
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            self.up_blocks.append(nn.ModuleList([res(ch + width if i == 0 else width, width)
                                                 for i in range(cfg.blocks_per_level)]))
            ch = width
            self.up_attn.append(attn(level))
            if level > 0:
                self.upsamples.append(Upsample(width, widths[level - 1]))
                ch = widths[level - 1]

        self.out_norm = group_norm(ch, cfg.groups)
        self.out_conv = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        # Zero-initialised output: the untrained net predicts 0, a safe start for eps/x0/v targets.
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The shared conditioning vector, (B, embed_dim), after SiLU (each block only applies a linear)."""
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        emb = self.time_mlp(timestep_embedding(t, self._freq_dim))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=t.device)
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("labels were given to an unconditional UNet (model.num_classes is 0)")
        return F.silu(emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, labels, x.shape[0])
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = self.down_attn[level](block(h, emb))
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for i, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = self.up_attn[i](block(h, emb))
            if i < len(self.upsamples):
                h = self.upsamples[i](h)

        return self.out_conv(F.silu(self.out_norm(h)))
