"""A sampling network under torch.compile, one graph per batch size.

On a CPU with bf16 matrix units the eager network is bound by its elementwise layers (GroupNorm, SiLU, the
residual adds: benchmarks/results/precision.md); inductor fuses them into the convolutions' neighbours.
Graphs are specialised to their shapes (dynamic=False: the fastest kernels), and a batch smaller than one
already compiled is padded up to it and cut back, so a run's short last batch costs no second compile.
Every layer treats each image on its own, so padding changes no image.
"""

from __future__ import annotations

import torch
from torch import nn


class CompiledNetwork:
    """Call `net` (x, *conditioning) through torch.compile. `module` is the plain network (for its attributes)."""

    def __init__(self, net: nn.Module):
        self.module = net
        self._compiled = torch.compile(net, dynamic=False)
        self._sizes: list[int] = []  # batch sizes compiled so far

    def __call__(self, x: torch.Tensor, *conditioning):
        b = x.shape[0]
        size = min((s for s in self._sizes if s >= b), default=None)
        if size is None:
            self._sizes.append(b)
            return self._compiled(x, *conditioning)
        inputs = [_pad(a, b, size) for a in (x, *conditioning)]
        return self._compiled(*inputs)[:b]

    def __getattr__(self, name: str):
        return getattr(self.module, name)


def _pad(a, b: int, size: int):
    """A batch tensor (b, ...) padded to (size, ...) with copies of its last row; anything else as it is."""
    if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] != b or size == b:
        return a
    return torch.cat([a, a[-1:].expand(size - b, *a.shape[1:])])
