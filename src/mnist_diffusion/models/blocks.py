"""Building blocks of the time-conditioned U-Net: noise-level embedding, residual block, bottom-level attention.

Shapes: feature maps are (B, C, H, W); embeddings are (B, D) with D = `ModelConfig.embed_dim`. The fast kernels
and version workarounds the blocks call (GroupNorm, the in-place SiLU and add, the nearest resize) are in
`kernels.py`: the same values as the plain PyTorch ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion.models import kernels
from mnist_diffusion.models.kernels import GroupNorm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features of a (possibly fractional) timestep, as in Vaswani et al. (2017) / Ho et al. (2020).

    t: (B,) timesteps in [0, T-1], any real value. Returns (B, dim) float32: [cos(t f_k), sin(t f_k)] with
    frequencies f_k = max_period^(-k / half) for k = 0..half-1 (half = dim // 2), zero-padded when dim is odd.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    angles = t.float()[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


GUIDANCE_FREQUENCY = 100.0  # w in [0, 10] spans timestep-like values 0..1000 in the sinusoid


class Conditioning:
    """The U-Net's conditioning, mixed into an nn.Module: MLP(sinusoid(t)) + class embedding.

    `init_conditioning` registers `time_mlp` and `label_emb` (state-dict keys `time_mlp.*`, `label_emb.*`);
    a conditional net has num_classes + 1 label embeddings, index `num_classes` meaning "no label" (for
    classifier-free guidance, Ho & Salimans 2022).
    """

    def init_conditioning(
        self, dim: int, num_classes: int, guidance_input: bool = False, interval_input: bool = False
    ) -> None:
        self.num_classes = num_classes
        self._freq_dim = dim  # sinusoid features, then an MLP of the same width
        self.time_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label_emb = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None
        # A distilled student's guidance scale w (Meng et al. 2023): sinusoid(GUIDANCE_FREQUENCY w) -> MLP, added
        # like the label. The last layer starts at zero, so a student initialised from its teacher's weights
        # starts as the teacher's plain conditional prediction at every w.
        self.guidance_input = guidance_input
        self.guidance_mlp = None
        if guidance_input:
            self.guidance_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            nn.init.zeros_(self.guidance_mlp[2].weight)
            nn.init.zeros_(self.guidance_mlp[2].bias)
        # MeanFlow's interval t - r (Geng et al. 2025), as a timestep: sinusoid -> MLP, added like the label. The
        # last layer starts at zero, so a net initialised from a flow model starts as that flow's velocity at
        # every interval.
        self.interval_input = interval_input
        self.interval_mlp = None
        if interval_input:
            self.interval_mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            nn.init.zeros_(self.interval_mlp[2].weight)
            nn.init.zeros_(self.interval_mlp[2].bias)

    def embed(
        self,
        t: torch.Tensor,
        labels: torch.Tensor | None,
        batch: int,
        guidance: torch.Tensor | None = None,
        interval: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The shared conditioning vector (B, embed_dim), after SiLU; each block applies only a linear to it.

        t: (B,) or a scalar (broadcast to the batch); labels: (B,) long in [0, num_classes] or None; guidance:
        (B,) or scalar guidance scales for a net with `guidance_input` (None = 1, the plain conditional); interval:
        (B,) or scalar t - r on the time input's scale, for a net with `interval_input` (None = 0, the velocity).
        """
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) to match the batch of x, got {tuple(t.shape)}")
        # The sinusoid is computed in fp32 (t up to 999 needs it), then fed in the weights' dtype (bf16 sampling).
        emb = self.time_mlp(timestep_embedding(t, self._freq_dim).to(self.time_mlp[0].weight.dtype))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=emb.device)
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError(f"labels were given to an unconditional {type(self).__name__} (model.num_classes is 0)")
        if self.guidance_mlp is not None:
            w = torch.ones(batch, device=emb.device) if guidance is None else torch.as_tensor(guidance).to(emb.device)
            w = w.float().expand(batch) if w.ndim == 0 else w.float()
            features = timestep_embedding(GUIDANCE_FREQUENCY * w, self._freq_dim).to(emb.dtype)
            emb = emb + self.guidance_mlp(features)
        elif guidance is not None:
            raise ValueError(f"a guidance scale was given to a {type(self).__name__} without guidance_input")
        if self.interval_mlp is not None:
            gap = (
                torch.zeros(batch, device=emb.device) if interval is None else torch.as_tensor(interval).to(emb.device)
            )
            gap = gap.float().expand(batch) if gap.ndim == 0 else gap.float()
            emb = emb + self.interval_mlp(timestep_embedding(gap, self._freq_dim).to(emb.dtype))
        elif interval is not None:
            raise ValueError(f"an interval was given to a {type(self).__name__} without interval_input")
        return F.silu(emb)


def group_norm(channels: int, groups: int) -> GroupNorm:
    """GroupNorm with at most `groups` groups, reduced to the largest divisor of `channels` so any width works.

    (`kernels.GroupNorm`: nn.GroupNorm's parameters and results, with a faster path for bf16 channels_last maps.)
    """
    g = math.gcd(max(1, groups), channels)
    return GroupNorm(g, channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3, add the projected embedding, GroupNorm-SiLU-dropout-conv3x3, plus a skip.

    x: (B, C_in, H, W), emb: (B, D) (already passed through SiLU) -> (B, C_out, H, W).
    With `scale_shift` the embedding modulates the second norm as h * (1 + scale) + shift (Dhariwal & Nichol
    2021, "adaptive group norm"); otherwise it is added as a per-channel bias (Ho et al. 2020).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        groups: int,
        dropout: float = 0.0,
        scale_shift: bool = False,
    ):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_channels, groups)
        # Without scale-shift the embedding's bias already adds a per-channel constant right after conv1.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=scale_shift)
        self.emb_proj = nn.Linear(embed_dim, out_channels * (2 if scale_shift else 1))
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        # A 1x1 conv only where widths differ; an identity skip costs nothing.
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # kernels.silu / kernels.add: F.silu and +, written into the fresh map they read when nothing will
        # differentiate it (sampling), so the same values without allocating new maps.
        h = self.conv1(kernels.silu(self.norm1(x)))
        e = self.emb_proj(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(kernels.add(h, e))
        h = self.conv2(self.dropout(kernels.silu(h)))
        return kernels.add(h, self.skip(x))


class SelfAttention2d(nn.Module):
    """Pre-norm multi-head self-attention over the H*W positions of a small map, with a residual.

    x: (B, C, H, W) -> (B, C, H, W). Meant for 7x7 maps (49 tokens), where it is cheap; C must be divisible
    by `heads`.
    """

    def __init__(self, channels: int, groups: int, heads: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by its {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, hgt * wid)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, HW, C/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, hgt, wid)
        return x + self.proj(out)


class Upsample(nn.Module):
    """1x1 conv to the new width at the low resolution, then nearest-neighbour resize to `size` (the skip's):
    (B, C_in, H, W) -> (B, C_out, *size), e.g. 14 -> 28, or 4 -> 7 in a 7x7 latent.

    Mixing channels before repeating pixels costs 1/4 of doing it after, and a 3x3 conv at the high
    resolution follows anyway (the next residual block), so nothing is lost; no transposed-conv checkerboards.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return kernels.nearest_resize(self.conv(x), size)
