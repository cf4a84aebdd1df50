"""DistributedDataParallel under torchrun: gloo on CPU, NCCL on CUDA. A single process needs none of it.

How a multi-process run stays one run:
- torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; `init` joins the process group it describes.
- Each rank trains on its own slice of every global batch (`data_order.epoch_batches`); DDP averages the
  gradients, so with equal slices the update is the one a single process would make from the mean loss
  over the whole global batch, and the learning rate needs no scaling.
- After every step all ranks hold the same weights. Rank 0 alone keeps the EMA, logs, evaluates and writes
  checkpoints (of the plain, unwrapped network, so they load in one process on any device).
- Once per step the ranks `agree` on the global-batch loss and on whether anyone was asked to stop
  (`stops`), so a NaN or a Ctrl-C makes every rank leave after the same step instead of some ranks waiting
  forever in the next gradient all-reduce.
- Only rank 0's random state is checkpointed; other ranks reseed from (seed, rank, step) (`reseed_other_ranks`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist
from torch import nn

from mnist_diffusion.errors import UserError
from mnist_diffusion.precision import PrecisionChoice
from mnist_diffusion.training import stops

# Test hook: a folder where every rank appends "step sha256-of-its-weights" lines to rank<R>.txt.
CHECKSUM_ENV = "MNIST_DIFFUSION_DEBUG_CHECKSUMS"


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
    """Join the process group torchrun set up (WORLD_SIZE > 1); otherwise a single process.

    The group carries CPU tensors over gloo and, where CUDA exists, CUDA tensors over NCCL, so `--device cpu`
    works on a GPU machine too. The group is destroyed at exit.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not tdist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend)
        atexit.register(shutdown)
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """Whether this process is rank 0 (or alone), known before `init` from torchrun's RANK variable."""
    return os.environ.get("RANK", "0") == "0"


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Under torchrun each process takes the GPU of its local rank."""
    if not d.enabled:
        return device
    if device.type == "mps":
        raise UserError("Several processes cannot share an MPS device; run one process, or use --device cpu.")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if d.local_rank >= count:
            raise UserError(
                f"Local rank {d.local_rank} has no GPU of its own: this node shows {count}; "
                f"start torchrun with --nproc_per_node={count} or fewer."
            )
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return device


def wrap(net: nn.Module, d: Dist, device: torch.device) -> nn.Module | None:
    """A DDP view of `net` for the forward pass (gradients are averaged across ranks); None when alone.

    DDP copies rank 0's weights to every rank here, so all ranks start equal. The ranks must hold the network
    in one memory layout (`check_same_layout`).
    """
    if not d.enabled:
        return None
    check_same_layout(d, net)
    # A 1x1 convolution's weight gradient can come back with different strides on its size-1 dimensions
    # than the weight itself; DDP copies it into its bucket just the same, and says so once per process.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def check_same_layout(d: Dist, net: nn.Module) -> None:
    """Refuse, on every rank alike, ranks whose networks differ in memory layout (NCHW or channels_last).

    `train.channels_last=auto` follows the precision `auto` resolves to, and on a CPU with bf16 units that
    comes from a speed probe each process measures on a machine's first run: two ranks measuring at once can
    decide differently. DDP would then fail on one rank (its weights' strides differ from rank 0's) and the
    others would see only "Connection closed by peer"; here every rank says what happened instead.
    """
    nhwc = [p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters()]
    mine = torch.tensor([sum(nhwc), -sum(nhwc)], dtype=torch.long)
    tdist.all_reduce(mine, op=tdist.ReduceOp.MAX)
    if int(mine[0]) != -int(mine[1]):
        raise UserError(
            "The ranks hold the network in different memory layouts (channels_last on some, NCHW on others): "
            "precision auto was measured separately in each process on this machine's first run; set "
            "train.precision and train.channels_last explicitly, or start again now that the measurement is cached."
        )


def agree(d: Dist, loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(the loss averaged over ranks, whether any rank was asked to stop): the same on every rank.

    The stop flag is read before this step's update and acted on after it, so every rank finishes the step.

    loss: this rank's scalar loss, the mean over its equal slice of the global batch, so the average
    over ranks is the mean over the global batch. A NaN on one rank makes the average NaN on all. One
    all-reduce of two numbers per step; alone it is free and returns `loss` detached.
    """
    if not d.enabled:
        return loss.detach(), stops.requested() is not None
    stop = float(stops.requested() is not None)
    both = torch.stack([loss.detach().float(), torch.tensor(stop, device=loss.device)])
    tdist.all_reduce(both)
    return both[0] / d.world_size, bool(both[1].item() > 0)


def check_same_step(d: Dist, step: int) -> None:
    """After a resume, every rank must have read the same checkpoint (all nodes see one run directory)."""
    if not d.enabled:
        return
    both = torch.tensor([step, -step], dtype=torch.long)
    tdist.all_reduce(both, op=tdist.ReduceOp.MAX)
    high, low = int(both[0]), -int(both[1])
    if high != low:
        raise UserError(
            f"The ranks resumed from different checkpoints (steps {low} to {high}); every node must see the "
            "same run directory (a shared filesystem, or an identical copy of checkpoint.safetensors)."
        )


def rank_seed(seed: int, rank: int, step: int, stream: str) -> int:
    """A seed for `stream` on `rank` from training step `step`: unrelated to every other (rank, step, stream)."""
    digest = hashlib.blake2b(f"mnist-diffusion/{stream}/{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def reseed_other_ranks(d: Dist, seed: int, step: int, generator: torch.Generator | None) -> None:
    """Give ranks > 0 random streams of their own, from (seed, rank, step); rank 0 is left alone.

    Only rank 0's states are in a checkpoint (they make a one-process resume exact). Other ranks draw
    their training noise from `generator` and their dropout masks from torch's global generators; seeding
    both from the step they (re)start at keeps ranks from sharing noise and makes a resumed run
    reproducible for a given number of processes (though not identical to the uninterrupted run).
    """
    if d.rank == 0:
        return
    torch.manual_seed(rank_seed(seed, d.rank, step, "global"))  # CPU and every CUDA device
    if generator is not None:
        generator.manual_seed(rank_seed(seed, d.rank, step, "noise"))


def write_checksum(d: Dist, net: nn.Module, step: int) -> None:
    """Test hook: with $MNIST_DIFFUSION_DEBUG_CHECKSUMS set to a folder, append this rank's weight hash."""
    folder = os.environ.get(CHECKSUM_ENV)
    if not folder:
        return
    h = hashlib.sha256()
    for name, value in net.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / f"rank{d.rank}.txt", "a") as f:
        f.write(f"{step} {h.hexdigest()}\n")


def shutdown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


def average_gradients(d: Dist, net: nn.Module) -> None:
    """Average `net`'s gradients across ranks in place (one all-reduce): what DDP does in backward, for an
    objective that had to call the bare module (a Jacobian-vector product does not pass through DDP). Nothing
    when alone."""
    if not d.enabled:
        return
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    flat /= d.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def from_rank0(d: Dist, choice: PrecisionChoice) -> PrecisionChoice:
    """Rank 0's precision choice on every rank (sent as JSON bytes, nothing unpickled); `choice` when alone."""
    if not d.enabled:
        return choice
    data = torch.zeros(1024, dtype=torch.uint8)
    if d.rank == 0:
        raw = json.dumps([choice.precision, choice.reason]).encode()[:1024]
        data[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    tdist.broadcast(data, src=0)
    precision, reason = json.loads(bytes(data[data != 0].tolist()).decode())
    return PrecisionChoice(precision, reason)
