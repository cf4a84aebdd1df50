"""A time- and class-conditioned U-Net for small latents, e.g. the (4, 7, 7) latents of the autoencoder.

The pixel U-Net halves 28 -> 14 -> 7 and doubles back, which needs even sizes; a 7x7 latent halves to 4
(a stride-2 conv rounds up) and must come back to exactly 7, so here every up-step resizes to the size of
the skip it meets. Layout for widths (64, 128), one residual block per level:

    z (B,C,7,7) -conv-> 64@7 -res-> [skip] -down-> 128@4 -res(+attn)-> [skip]
    middle: res, attn, res at 4x4
    up:     cat skip -> res(+attn) @4 -up to 7-> cat skip -> res @7 -> norm, SiLU, conv -> (B,C,7,7)

Self-attention sits at the smallest level when `ModelConfig.attention_7x7` is set (16 tokens at 4x4: cheap).
Blocks, embeddings and the label convention (index num_classes = "no label", for classifier-free guidance)
are those of the pixel U-Net (`models.blocks`, `models.unet`). The output conv starts at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.blocks import Downsample, ResBlock, SelfAttention2d, group_norm, timestep_embedding


class LatentUNet(nn.Module):
    """forward(z: (B,C,H,W), t: (B,) float timesteps in [0, T-1], labels: (B,) long | None) -> (B,C,H,W).

    Any H, W >= 1 (sizes round up when halving). C = `cfg.in_channels` (the latent's channels).
    """

    def __init__(self, cfg: ModelConfig):
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
        last = len(widths) - 1

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, dim, cfg.groups, cfg.dropout)

        def attn(level: int) -> nn.Module:
            return SelfAttention2d(widths[level], cfg.groups) if level == last and cfg.attention_7x7 else nn.Identity()

        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()  # per level: [blocks..., attention]
        self.downsamples = nn.ModuleList()
        ch = widths[0]
        for level, width in enumerate(widths):
            self.down.append(nn.ModuleList([res(ch if i == 0 else width, width) for i in range(cfg.blocks_per_level)]
                                           + [attn(level)]))
            ch = width
            if level < last:
                self.downsamples.append(Downsample(width, widths[level + 1]))
                ch = widths[level + 1]
        self.mid1 = res(ch, ch)
        self.mid_attn = SelfAttention2d(ch, cfg.groups) if cfg.attention_7x7 else nn.Identity()
        self.mid2 = res(ch, ch)
        self.up = nn.ModuleList()
        self.upconvs = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            self.up.append(nn.ModuleList([res(ch + width if i == 0 else width, width)
                                          for i in range(cfg.blocks_per_level)] + [attn(level)]))
            ch = width
            if level > 0:
                self.upconvs.append(nn.Conv2d(width, widths[level - 1], 3, padding=1))
                ch = widths[level - 1]
        self.out_norm = group_norm(ch, cfg.groups)
        self.out_conv = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The shared conditioning vector (B, embed_dim), after SiLU: MLP(sinusoid(t)) + class embedding."""
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
            raise ValueError("labels were given to an unconditional LatentUNet (model.num_classes is 0)")
        return F.silu(emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, labels, x.shape[0])
        h = self.stem(x)
        skips = []
        for level, (*blocks, attention) in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            h = attention(h)
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, (*blocks, attention) in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            h = attention(h)
            if i < len(self.upconvs):
                # Resize to the next skip's size (4 -> 7, not 8), then convolve: no transposed-conv checkerboards.
                h = self.upconvs[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.out_conv(F.silu(self.out_norm(h)))
