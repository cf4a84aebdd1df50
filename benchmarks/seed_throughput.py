"""Training images/s of the `seed` recipe through the package vs a bare PyTorch loop of the seed's own code.

Both sides train the same network (the seed's BasicUNet) on the same MNIST images with the same batch size,
threads and optimizer; timings alternate between the two sides and the median of the repeats is reported.

    python benchmarks/seed_throughput.py [--steps 60] [--repeats 5]

Writes benchmarks/results/seed_throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from mnist_diffusion.config import with_changes  # noqa: E402
from mnist_diffusion.data import load_split  # noqa: E402
from mnist_diffusion.recipes import get_recipe  # noqa: E402
from mnist_diffusion.training.data_order import epoch_batches  # noqa: E402
from mnist_diffusion.training.loop import make_trainer  # noqa: E402


# ---- the seed tutorial's code, as it stands there ----------------------------------------------------------
class SeedBasicUNet(nn.Module):
    def __init__(self, in_channels=1, out_channels=1):
        super().__init__()
        self.down_layers = torch.nn.ModuleList([
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
        ])
        self.up_layers = torch.nn.ModuleList([
            nn.Conv2d(64, 64, kernel_size=5, padding=2),
            nn.Conv2d(64, 32, kernel_size=5, padding=2),
            nn.Conv2d(32, out_channels, kernel_size=5, padding=2),
        ])
        self.act = nn.SiLU()
        self.downscale = nn.MaxPool2d(2)
        self.upscale = nn.Upsample(scale_factor=2)

    def forward(self, x):
        h = []
        for i, l in enumerate(self.down_layers):
            x = self.act(l(x))
            if i < 2:
                h.append(x)
                x = self.downscale(x)
        for i, l in enumerate(self.up_layers):
            if i > 0:
                x = self.upscale(x)
                x += h.pop()
            x = self.act(l(x))
        return x


def seed_corrupt(x, amount):
    noise = torch.rand_like(x)
    amount = amount.view(-1, 1, 1, 1)
    return x * (1 - amount) + noise * amount


def bare_loop(images: torch.Tensor, steps: int, batch_size: int) -> float:
    """The seed's training loop over a DataLoader of the same images; returns images/s."""
    dataset = torch.utils.data.TensorDataset(images.float().div(255).unsqueeze(1))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    net = SeedBasicUNet()
    loss_fn = nn.MSELoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    it = iter(loader)

    def step():
        nonlocal it
        try:
            (x,) = next(it)
        except StopIteration:
            it = iter(loader)
            (x,) = next(it)
        noise_amount = torch.rand(x.shape[0])
        noisy_x = seed_corrupt(x, noise_amount)
        pred = net(noisy_x)
        loss = loss_fn(pred, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def package_loop(steps: int, batch_size: int, run_dir: Path) -> float:
    """The package's `seed` recipe: its data order, batch assembly and train_step; returns images/s."""
    cfg = with_changes(get_recipe("seed"), train={"batch_size": batch_size})
    trainer = make_trainer(cfg, run_dir)
    batches = (idx for epoch in range(1000) for _, idx in epoch_batches(len(trainer.images), batch_size, epoch, 0))
    for _ in range(5):
        trainer.train_step(*trainer.batch(next(batches)))
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*trainer.batch(next(batches)))
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "seed_throughput.md")
    args = ap.parse_args()
    images, _ = load_split("mnist", "train")
    images = torch.from_numpy(images)
    bare, package = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            bare.append(bare_loop(images, args.steps, args.batch_size))
            package.append(package_loop(args.steps, args.batch_size, Path(tmp) / f"run{r}"))
            print(f"repeat {r + 1}: bare seed loop {bare[-1]:.0f} img/s, package {package[-1]:.0f} img/s", flush=True)
    b, p = statistics.median(bare), statistics.median(package)
    info = machine_info()
    lines = [
        "# Seed recipe: training throughput, package vs bare seed loop",
        "",
        f"Command: `python benchmarks/seed_throughput.py --steps {args.steps} --repeats {args.repeats}`",
        f"Machine: {info}",
        "",
        "| side | images/s (median of repeats) | all repeats |",
        "|---|---|---|",
        f"| bare PyTorch loop of the seed's code (DataLoader) | {b:.0f} | {', '.join(f'{v:.0f}' for v in bare)} |",
        f"| mnist-diffusion `seed` recipe (`Trainer.train_step`) | {p:.0f} | {', '.join(f'{v:.0f}' for v in package)} |",
        "",
        f"Package / bare: **{p / b:.2f}x** (target: at least 0.90x).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
