"""The machine's matmul peak and the FLOPs a piece of model code does, for throughput-vs-peak benchmarks.

What `count_flops` counts: `torch.utils.flop_counter.FlopCounterMode` adds up the multiply-adds (2 FLOPs each)
of matrix products and convolutions only -- mm/addmm/bmm/baddbmm, convolution and its backward,
scaled_dot_product_attention and its backward. Elementwise work (GroupNorm, SiLU, adds, the optimizer update,
the loss) is not counted, so "achieved GFLOP/s" below is a lower bound on the arithmetic the CPU really does
and a fair measure of how busy the matmul/conv units are.
"""

from __future__ import annotations

import statistics
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from mnist_diffusion import precision


def matmul_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 5,
                  max_seconds: float = 20.0) -> float:
    """Median GFLOP/s of `torch.mm` on two random (n, n) matrices of `dtype`, with every intra-op thread
    (`precision.matmul_gflops`: one warm-up, then up to `repeats` timed products within `max_seconds`)."""
    return precision.matmul_gflops(dtype, n, repeats, max_seconds, summary=statistics.median)


def count_flops(fn: Callable[[], object]) -> int:
    """Total matmul + convolution FLOPs (forward and whatever backward `fn` runs) of one call of `fn`."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def flops_by_operator(fn: Callable[[], object]) -> dict[str, int]:
    """`count_flops` split by ATen operator name (e.g. 'convolution', 'convolution_backward', 'mm')."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return {str(op).split(".")[-1]: int(n) for op, n in counter.get_flop_counts()["Global"].items()}
