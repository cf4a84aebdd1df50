"""The order in which training images are visited: a pure function of (seed, epoch), so resume is exact.

Each epoch is a fresh permutation cut into full global batches (the remainder of an epoch is skipped; the next
epoch's permutation reaches it). With several processes each rank takes a disjoint, equal slice of every
global batch, so the global batch is what the config says whatever the number of processes.
"""

from __future__ import annotations

import torch

from mnist_diffusion.errors import UserError


def batches_per_epoch(n_images: int, batch_size: int) -> int:
    n = n_images // batch_size
    if n < 1:
        raise UserError(f"train.batch_size {batch_size} is larger than the {n_images} training images; lower it.")
    return n


def epoch_batches(
    n_images: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0
):
    """Yield (batch_index, indices) for this rank, from batch `start` of `epoch` on; indices is a LongTensor."""
    if batch_size % world_size:
        raise UserError(f"train.batch_size {batch_size} must be divisible by the number of processes ({world_size}).")
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_images, generator=g)
    per_rank = batch_size // world_size
    for b in range(start, batches_per_epoch(n_images, batch_size)):
        chunk = order[b * batch_size : (b + 1) * batch_size]
        yield b, chunk[rank * per_rank : (rank + 1) * per_rank]
