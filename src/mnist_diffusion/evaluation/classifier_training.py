"""Seeded, reproducible training of the evaluator classifier.

Recipe: Adam with a one-cycle learning-rate schedule (Smith & Topin 2019), cross-entropy, batches of
128 in an order drawn from a seeded generator, and one light augmentation -- each image shifted by
up to `max_shift` pixels in x and y (zero padding), which makes features less sensitive to where a
digit sits, a nuisance a generator should not be scored on. Everything random comes from
`torch.manual_seed(seed)` (initial weights) and one `torch.Generator` seeded with `seed` (order,
shifts), so the same command on the same torch build and CPU gives the same weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mnist_diffusion.evaluation.network import EvaluatorConfig, FeatureNet, count_parameters


@dataclass(frozen=True)
class EvaluatorTrainConfig:
    dataset: str = "mnist"
    epochs: int = 4
    batch_size: int = 128
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    max_shift: int = 2  # random translation in pixels, each axis
    seed: int = 0
    limit: int | None = None  # train on the first N images only (tests)


@dataclass(frozen=True)
class TrainResult:
    net: FeatureNet
    test_accuracy: float
    seconds: float
    parameters: int


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of (N, 1, H, W) by its own integer offset in [-max_shift, max_shift]^2, zero fill."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    oy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(net: FeatureNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of `net` (put in eval mode) on uint8 images (N, 28, 28) with int labels (N,)."""
    net.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start : start + batch_size]).to(torch.float32).unsqueeze(1) / 255.0
        correct += int((net(x).argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)


def train_evaluator(
    cfg: EvaluatorTrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    arch: EvaluatorConfig | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train a FeatureNet on (uint8 images (N,28,28), int64 labels (N,)) and measure test accuracy; `arch`
    defaults to `EvaluatorConfig()`."""
    arch = arch if arch is not None else EvaluatorConfig()
    started = time.perf_counter()
    images, labels = train
    if cfg.limit is not None:
        images, labels = images[: cfg.limit], labels[: cfg.limit]
    x_all = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).unsqueeze(1) / 255.0
    y_all = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)

    torch.manual_seed(cfg.seed)
    net = FeatureNet(arch)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = -(-len(x_all) // cfg.batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    log(
        f"training evaluator on {cfg.dataset}: {len(x_all)} images, {count_parameters(net):,} parameters, "
        f"{cfg.epochs} epochs of {steps_per_epoch} steps"
    )
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x_all), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x = random_shift(x_all[idx], cfg.max_shift, generator)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {total / seen:.4f} ({time.perf_counter() - started:.0f} s)")
    test_acc = accuracy(net, *test)
    seconds = time.perf_counter() - started
    log(f"test accuracy {test_acc:.4%} on {len(test[0])} images; {seconds:.0f} s in all")
    return TrainResult(net=net, test_accuracy=test_acc, seconds=seconds, parameters=count_parameters(net))
