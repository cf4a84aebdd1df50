"""How a network runs when it samples: in bf16 between fp32 boundaries, under torch.compile, or as it is.

`wrap(net, precision, compile)` composes the two wrappers in one line; whatever calls the network then calls
what `wrap` returned, so the casts and the compiler are visible where the network is called:

    forward = wrap(net, PrecisionChoice("bf16", "asked for"), compile=True)
    # = CompiledNetwork(Bf16Network(net)): x_t (fp32) -> bf16 -> net (bf16 weights) -> fp32, compiled

Both wrappers read attributes they do not have (`num_classes`, `guidance_input`, ...) from the network they
wrap, which each exposes as `.net`. Neither adds parameters: the wrapped network's state-dict is the model's.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_diffusion.precision import PrecisionChoice


class Bf16Network(nn.Module):
    """`net` with its floating-point weights cast to bf16 (in place), taking and returning fp32.

    forward(x, *conditioning): x (the map to denoise or decode, any float dtype) is cast to bf16 on the way in
    and the output back to fp32 on the way out. The conditioning (timesteps, labels, guidance scales) passes as
    it is: the network embeds timesteps in fp32, since bf16 cannot hold t = 999 exactly. So a sampler's state,
    the noise schedule and the guidance combination stay fp32, and only the network's arithmetic is bf16.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net.to(torch.bfloat16)

    def forward(self, x: torch.Tensor, *conditioning) -> torch.Tensor:
        return self.net(x.to(torch.bfloat16), *conditioning).float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # parameters, buffers and submodules (`net` itself)
        except AttributeError:
            if name == "net":
                raise
            return getattr(self.net, name)


class CompiledNetwork:
    """Call `net` (x, *conditioning) through torch.compile, one graph per batch size. `net`: the wrapped network.

    Graphs are specialised to their shapes (dynamic=False: the fastest kernels), and a batch smaller than one
    already compiled is padded up to it and cut back, so a run's short last batch costs no second compile.
    Every layer treats each image on its own, so padding changes no image. Inductor fuses the elementwise layers
    (GroupNorm, SiLU, the residual adds) into their neighbours, which is where a bf16 network on a CPU spends
    its time (docs/results.md, precision and sampling suites).
    """

    def __init__(self, net: nn.Module):
        self.net = net
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
        if name == "net":  # not set yet (during unpickling or a failed __init__)
            raise AttributeError(name)
        return getattr(self.net, name)


def _pad(a, b: int, size: int):
    """A batch tensor (b, ...) padded to (size, ...) with copies of its last row; anything else as it is."""
    if not isinstance(a, torch.Tensor) or a.dim() == 0 or a.shape[0] != b or size == b:
        return a
    return torch.cat([a, a[-1:].expand(size - b, *a.shape[1:])])


def wrap(net: nn.Module, precision: PrecisionChoice, compile: bool = False) -> nn.Module | CompiledNetwork:
    """What to call in place of `net` to sample in `precision`: `Bf16Network(net)` for bf16 (which casts `net`'s
    weights to bf16 in place; keep a copy of the fp32 weights to save them), `net` as it is for fp32; under
    `CompiledNetwork` when `compile`. Calling it again on the same network wraps it again, the same way."""
    if precision.precision == "bf16":
        net = Bf16Network(net)
    return CompiledNetwork(net) if compile else net


def sampling_layout(net: nn.Module, device: str | torch.device) -> nn.Module:
    """Put a network's weights in the memory layout that samples fastest on `device`, in place: NHWC
    (channels_last) lets oneDNN on the CPU and cuDNN on CUDA pick faster convolution kernels for inference
    (the `sampling` suite in docs/results.md); other devices keep NCHW."""
    if torch.device(device).type in ("cpu", "cuda"):
        net.to(memory_format=torch.channels_last)
    return net
