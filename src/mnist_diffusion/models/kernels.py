"""Fast kernels and version workarounds under the U-Net's blocks; `blocks.py` holds the network itself.

Everything here computes what the plain PyTorch op computes; what differs is how (layout, chunking, writing in
place) or, for a workaround, which path of torch a tensor takes. The blocks call four names:

- `GroupNorm`: nn.GroupNorm with the same parameters and state-dict keys, and a faster path for bf16 / fp16
  channels_last maps, plus the workaround for a crash in torch 2.13's channels_last backward;
- `silu` and `add`: ResBlock's SiLUs and residual adds, written into the fresh map they read when nothing
  will differentiate them;
- `nearest_resize`: Upsample's nearest-neighbour resize, with the workaround for torch 2.13's inductor.

Why each one pays, measured: docs/performance.md and docs/results.md (precision suite).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Batch rows per pass when no gradient is wanted: an fp32 copy of a whole batch's map costs more to write and read
# back than the arithmetic, while a copy of about this many bytes stays in a core's cache (docs/results.md,
# precision suite). Each sample is normalised on its own, so the results are the same.
CHUNK_BYTES = 1 << 20
# Without autograd, ResBlock's SiLUs and adds write into the fresh maps they read (`silu`, `add`).
INPLACE_INFERENCE = True
# From this many positions (28x28) up, a bf16 channels_last map is normalised through per-channel fp32 sums
# (`group_norm_fp32_stats`); below it through torch's fp32 kernel on the upcast map: whichever was faster at each
# size (docs/performance.md, docs/results.md).
FP32_STATS_MIN_POSITIONS = 784


# ---- when to take the whole batch at once -----------------------------------------------------------------------
def _chunk_rows(bytes_per_row: int) -> int:
    """Batch rows per chunk of about `CHUNK_BYTES` (at least one)."""
    return max(1, CHUNK_BYTES // max(1, bytes_per_row))


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _one_pass(*tensors: torch.Tensor | None) -> bool:
    """Whether to take the whole batch at once: for autograd, and under torch.compile, which fuses the passes."""
    return torch.compiler.is_compiling() or _wants_grad(*tensors)


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether x is a 4-d map laid out NHWC (and not also NCHW, as a map with one channel or one pixel is)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


# ---- GroupNorm ----------------------------------------------------------------------------------------------------
def _channel_sums(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of rows and rows^2 over positions in fp32: (B, P, C) of any float dtype -> two (B, C)."""
    if _one_pass(rows):
        r = rows.float()
        return r.sum(1), (r * r).sum(1)
    b, p, c = rows.shape
    sums, squares = (torch.empty(b, c, dtype=torch.float32, device=rows.device) for _ in range(2))
    step = _chunk_rows(4 * p * c)
    for i in range(0, b, step):
        r = rows[i : i + step].float()
        sums[i : i + step] = r.sum(1)
        squares[i : i + step] = (r * r).sum(1)
    return sums, squares


def group_norm_fp32_stats(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """F.group_norm(x, groups, weight, bias, eps) computed as per-channel fp32 sums and one scale-and-shift.

    x: (B, C, *spatial) of any float dtype, C divisible by `groups`; weight, bias: (C,) or None. Returns x's
    shape, dtype and memory format. Sums of x and x^2 over the spatial positions are taken in fp32 in x's own
    layout (for channels_last a reduction over rows of the (B, H*W, C) view), combined per group into the mean
    and variance, and folded with the affine into a per-channel scale and shift applied in x's dtype:
    y = x * scale + shift. So a channels_last bf16 map never meets torch's group_norm kernel, whose
    channels_last bf16 path is much slower than its NCHW one. The variance as E[x^2] - mean^2 in fp32 loses
    less than bf16's own rounding of x unless |mean| is hundreds of standard deviations.
    """
    b, c = x.shape[:2]
    channels_last = _is_channels_last(x)
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


def _group_norm_upcast(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """torch's fp32 group_norm kernel on a reduced-precision map upcast to fp32, rounded once back to x's dtype;
    without autograd a cache-sized chunk of the batch at a time (the same values as the whole batch at once)."""
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    if _one_pass(x, norm.weight, norm.bias):
        return F.group_norm(x.float(), norm.num_groups, weight, bias, norm.eps).to(x.dtype)
    out = torch.empty_like(x)  # channels_last, x's dtype
    step = _chunk_rows(4 * x[0].numel())
    for i in range(0, len(x), step):
        out[i : i + step] = F.group_norm(x[i : i + step].float(), norm.num_groups, weight, bias, norm.eps)
    return out


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm with the same parameters and state-dict keys, fast on channels_last bf16 / fp16 maps.

    torch's own group_norm kernel is slow on a reduced-precision channels_last map, so such a map never meets
    it: from `FP32_STATS_MIN_POSITIONS` positions up it goes through `group_norm_fp32_stats`, below that through
    torch's fp32 kernel on the map upcast to fp32 (then rounded once to the input's dtype). Anything else (fp32,
    NCHW) goes through torch's own kernel, so fp32 results are torch's to the bit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = _is_channels_last(x)
        if channels_last and not x.requires_grad and _wants_grad(self.weight, self.bias):
            # Workaround, torch 2.13: the channels_last GroupNorm backward crashes (a segmentation fault) when
            # only the weight and bias want gradients, as for a norm that reads the network's input; NCHW is safe.
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        if x.dtype in (torch.bfloat16, torch.float16) and channels_last:
            if x.shape[-2] * x.shape[-1] >= FP32_STATS_MIN_POSITIONS:
                return group_norm_fp32_stats(x, self.num_groups, self.weight, self.bias, self.eps)
            return _group_norm_upcast(self, x)
        return super().forward(x)


# ---- in-place SiLU and add without autograd -----------------------------------------------------------------------
def _in_place() -> bool:
    """Whether SiLUs and adds may write into the map they read: not for autograd, which needs the inputs it saved,
    and not under torch.compile, which fuses these ops itself (its graphs ran slower with the writes in place)."""
    return INPLACE_INFERENCE and not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def silu(fresh: torch.Tensor) -> torch.Tensor:
    """F.silu(fresh), written into `fresh` (a map no one else holds) when nothing will differentiate it."""
    return F.silu(fresh, inplace=_in_place())


def add(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """fresh + other, written into `fresh` (a map no one else holds) when nothing will differentiate it and the
    sum keeps its dtype and shape."""
    if (
        _in_place()
        and torch.result_type(fresh, other) == fresh.dtype
        and torch.broadcast_shapes(fresh.shape, other.shape) == fresh.shape
    ):
        return fresh.add_(other)
    return fresh + other


# ---- nearest-neighbour resize -------------------------------------------------------------------------------------
def nearest_resize(x: torch.Tensor, size) -> torch.Tensor:
    """F.interpolate(x, size, mode="nearest") for (B, C, H, W) maps; while torch.compile traces a forward that
    will be differentiated, the same pixels through `repeat_resize` where it applies.

    Workaround, torch 2.13: inductor gets the bf16 backward of nearest upsampling wrong on the CPU (zero
    gradients for everything below the resize), so `train.compile` under bf16 autocast trained only the top of
    the U-Net. Eager, and compiled for sampling, F.interpolate is the faster kernel.
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
    if _is_channels_last(x):  # repeat in NHWC order
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
