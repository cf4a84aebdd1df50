"""Building blocks of the time-conditioned U-Net: noise-level embedding, residual block, bottom-level attention.

Shapes: feature maps are (B, C, H, W); embeddings are (B, D) with D = `ModelConfig.embed_dim`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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

    def init_conditioning(self, dim: int, num_classes: int, guidance_input: bool = False) -> None:
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

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None, batch: int,
              guidance: torch.Tensor | None = None) -> torch.Tensor:
        """The shared conditioning vector (B, embed_dim), after SiLU; each block applies only a linear to it.

        t: (B,) or a scalar (broadcast to the batch); labels: (B,) long in [0, num_classes] or None; guidance:
        (B,) or scalar guidance scales for a net with `guidance_input` (None = 1, the plain conditional).
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
        return F.silu(emb)


# Batch rows per pass when no gradient is wanted: fp32 copies of about this many bytes stay in a core's cache,
# where an fp32 copy of a whole 128x32x28x28 batch (13 MB) costs more to write and read back than the arithmetic
# (benchmarks/results/inference_memory.md). Each sample is normalised on its own, so the results are the same.
CHUNK_BYTES = 1 << 20
# Without autograd, ResBlock's SiLUs and adds write into the fresh maps they read (`ResBlock.forward`).
INPLACE_INFERENCE = True


def _chunk_rows(bytes_per_row: int) -> int:
    """Batch rows per chunk of about `CHUNK_BYTES` (at least one)."""
    return max(1, CHUNK_BYTES // max(1, bytes_per_row))


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _one_pass(*tensors: torch.Tensor | None) -> bool:
    """Whether to take the whole batch at once: for autograd, and under torch.compile, which fuses the passes."""
    return torch.compiler.is_compiling() or _wants_grad(*tensors)


def _channel_sums(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of rows and rows^2 over positions in fp32: (B, P, C) of any float dtype -> two (B, C)."""
    if _one_pass(rows):
        r = rows.float()
        return r.sum(1), (r * r).sum(1)
    b, p, c = rows.shape
    sums, squares = (torch.empty(b, c, dtype=torch.float32, device=rows.device) for _ in range(2))
    step = _chunk_rows(4 * p * c)
    for i in range(0, b, step):
        r = rows[i:i + step].float()
        sums[i:i + step] = r.sum(1)
        squares[i:i + step] = (r * r).sum(1)
    return sums, squares


def group_norm_fp32_stats(x: torch.Tensor, groups: int, weight: torch.Tensor | None = None,
                          bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """F.group_norm(x, groups, weight, bias, eps) computed as per-channel fp32 sums and one scale-and-shift.

    x: (B, C, *spatial) of any float dtype, C divisible by `groups`; weight, bias: (C,) or None. Returns x's
    shape, dtype and memory format. Sums of x and x^2 over the spatial positions are taken in fp32 in x's own
    layout (for channels_last a reduction over rows of the (B, H*W, C) view), combined per group into the mean
    and variance, and folded with the affine into a per-channel scale and shift applied in x's dtype:
    y = x * scale + shift. So a channels_last bf16 map never meets torch's group_norm kernel, whose
    channels_last bf16 path is several times slower than its NCHW one. The variance as E[x^2] - mean^2 in
    fp32 loses less than bf16's own rounding of x unless |mean| is hundreds of standard deviations.
    """
    b, c = x.shape[:2]
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    rows = x.permute(0, 2, 3, 1).reshape(b, -1, c) if channels_last else x.reshape(b, c, -1).transpose(1, 2)
    sums, squares = _channel_sums(rows)  # (B, C) each, fp32
    count = rows.shape[1] * (c // groups)
    mean = sums.view(b, groups, -1).sum(2) / count  # (B, G)
    var = (squares.view(b, groups, -1).sum(2) / count - mean * mean).clamp_min(0)
    scale = torch.rsqrt(var + eps).repeat_interleave(c // groups, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(c // groups, dim=1) * scale
    if weight is not None:
        scale = scale * weight.float()
        shift = shift * weight.float()
    if bias is not None:
        shift = shift + bias.float()
    view = (b, c) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.to(x.dtype).view(view), x, scale.to(x.dtype).view(view))


# torch's group_norm kernel is several times slower on a channels_last bf16 map than on the same map in NCHW or in
# fp32 (one-off timings on a 2-core AMX Xeon, with the SiLU: a 128x64x7x7 map 1.6 ms against 0.46 ms upcast to
# fp32 and back). From this many positions (28x28) up, per-channel fp32 sums and one scale-and-shift are fastest
# (`group_norm_fp32_stats`, 8.7 ms against 10.9 upcast and 21.8 torch's for 128x32x28x28); below it, torch's
# fp32 kernel on the upcast map is (docs/performance.md).
FP32_STATS_MIN_POSITIONS = 784


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm with the same parameters and state-dict keys, fast on channels_last bf16 / fp16 maps.

    Such a map never meets torch's slow reduced-precision channels_last kernel: from `FP32_STATS_MIN_POSITIONS`
    positions up it goes through `group_norm_fp32_stats`, below that through torch's fp32 kernel on the map
    upcast to fp32 (then rounded once to the input's dtype). Anything else (fp32, NCHW) goes through torch's
    own kernel, so fp32 results are torch's to the bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if channels_last and not x.requires_grad and _wants_grad(self.weight, self.bias):
            # torch 2.13's channels_last GroupNorm backward crashes (a segmentation fault) when only the weight
            # and bias want gradients, as for a norm that reads the network's input; NCHW is safe.
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        if x.dtype in (torch.bfloat16, torch.float16) and channels_last:
            if x.shape[-2] * x.shape[-1] >= FP32_STATS_MIN_POSITIONS:
                return group_norm_fp32_stats(x, self.num_groups, self.weight, self.bias, self.eps)
            weight = None if self.weight is None else self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            if _one_pass(x, self.weight, self.bias):
                return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)
            out = torch.empty_like(x)  # channels_last, x's dtype; filled a cache-sized chunk of the batch at a time
            step = _chunk_rows(4 * x[0].numel())
            for i in range(0, len(x), step):
                out[i:i + step] = F.group_norm(x[i:i + step].float(), self.num_groups, weight, bias, self.eps)
            return out
        return super().forward(x)


def group_norm(channels: int, groups: int) -> GroupNorm:
    """GroupNorm with at most `groups` groups, reduced to the largest divisor of `channels` so any width works."""
    g = math.gcd(max(1, groups), channels)
    return GroupNorm(g, channels)


def _add(fresh: torch.Tensor, other: torch.Tensor, inplace: bool) -> torch.Tensor:
    """fresh + other, written into `fresh` (a map no one else holds) when `inplace` and the sum keeps its dtype
    and shape."""
    if inplace and torch.result_type(fresh, other) == fresh.dtype and torch.broadcast_shapes(
            fresh.shape, other.shape) == fresh.shape:
        return fresh.add_(other)
    return fresh + other


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
        # Without autograd the SiLUs and adds write into the fresh maps they read instead of allocating new ones:
        # the same values, an fp32 `ddpm-cond` draw 1.11x faster and a bf16 one 1.02-1.06x (benchmarks/results/
        # inference_memory.md). Autograd needs the inputs it saved, so training keeps the out-of-place form, and so
        # does torch.compile, which fuses these ops itself (its graphs ran slower with the writes in place).
        inplace = INPLACE_INFERENCE and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        e = self.emb_proj(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(_add(h, e, inplace))
        h = self.conv2(self.dropout(F.silu(h, inplace=inplace)))
        return _add(h, self.skip(x), inplace)


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
        return nearest_resize(self.conv(x), size)


def nearest_resize(x: torch.Tensor, size) -> torch.Tensor:
    """F.interpolate(x, size, mode="nearest") for (B, C, H, W) maps; while torch.compile traces a forward that
    will be differentiated, the same pixels through `repeat_resize` where it applies.

    Why: torch 2.13's inductor gets the bf16 backward of nearest upsampling wrong on the CPU (zero gradients for
    everything below the resize), so `train.compile` under bf16 autocast trained only the top of the U-Net.
    Eager, and compiled for sampling, F.interpolate is the faster kernel.
    """
    if torch.compiler.is_compiling() and torch.is_grad_enabled():
        y = repeat_resize(x, size)
        if y is not None:
            return y
    return F.interpolate(x, size=tuple(size), mode="nearest")


def repeat_resize(x: torch.Tensor, size) -> torch.Tensor | None:
    """Nearest resizing where each side doubles (n -> 2n, or n -> 2n - 1 with the last repeat cut off, e.g.
    4 -> 7) or stays, as a broadcast and a reshape in the layout of x (gradient: a plain sum); bit-identical to
    F.interpolate(mode="nearest"). None for other size pairs."""
    (h, w), (out_h, out_w) = x.shape[-2:], tuple(size)
    kh, kw = _repeats(h, out_h), _repeats(w, out_w)
    if kh is None or kw is None:
        return None
    b, c = x.shape[:2]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():  # repeat in NHWC order
        y = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(b, h, kh, w, kw, c)
        y = y.reshape(b, h * kh, w * kw, c).permute(0, 3, 1, 2)
    else:
        y = x[:, :, :, None, :, None].expand(b, c, h, kh, w, kw).reshape(b, c, h * kh, w * kw)
    return y[:, :, :out_h, :out_w]


def _repeats(n_in: int, n_out: int) -> int | None:
    """How often nearest resizing n_in -> n_out repeats each source pixel, where that is one number for all
    (output i reads floor(i * n_in / n_out) = i // k): 1 for n_out = n_in, 2 for n_out = 2 n_in or 2 n_in - 1
    (the fraction stays 1 / (2 n_in - 1) or more from a whole number, far beyond float32 rounding); else None."""
    if n_out == n_in:
        return 1
    return 2 if n_out in (2 * n_in, 2 * n_in - 1) else None
