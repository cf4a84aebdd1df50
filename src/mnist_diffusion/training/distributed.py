"""DistributedDataParallel under torchrun: gloo on CPU, NCCL on CUDA. A single process needs none of it."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init() -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend)
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its local rank."""
    if d.enabled and device.type == "cuda":
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return device


def wrap(net: nn.Module, d: Dist, device: torch.device) -> nn.Module | None:
    """A DDP view of `net` for the forward pass (gradients are averaged across ranks); None when alone."""
    if not d.enabled:
        return None
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
