"""Exponential moving average of weights: the averaged copy is what samples."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """ema <- d * ema + (1 - d) * w, with d warmed up as min(decay, (1 + n) / (10 + n)).

    The warm-up keeps short runs from sampling with weights dominated by the random initialisation.
    """

    def __init__(self, net: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadows, currents = [], []
        for k, v in net.state_dict().items():
            s = self.shadow[k]
            if v.dtype == s.dtype:  # float32 weights: averaged below in one multi-tensor call
                shadows.append(s)
                currents.append(v.detach())
            elif v.dtype.is_floating_point:
                s.lerp_(v.detach().float(), 1.0 - d)
            else:
                s.copy_(v)
        # One fused kernel for all float32 tensors instead of one per tensor: on a GPU, launching ~200 small
        # kernels per step cost more than the arithmetic.
        if shadows:
            torch._foreach_lerp_(shadows, currents, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow
