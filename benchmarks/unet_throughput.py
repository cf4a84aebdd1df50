"""Training throughput of the project's default U-Net against the Hugging Face diffusion course's UNet2DModel.

Both models train on the same batch (forward, backward, AdamW step) with the same number of CPU threads.
Timed steps alternate between the two models repeat by repeat, so load from other processes hits both
alike; each model's images/s is the median over repeats, and the ratio is the ratio of the medians.

    python benchmarks/unet_throughput.py                       # 2 threads, then 1; batch 128; writes the results file
    python benchmarks/unet_throughput.py --threads 2 --repeats 3 --output /tmp/unet.md

Needs diffusers (a benchmark-only dependency): pip install -r benchmarks/requirements.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_model  # noqa: E402
from _peer import course_unet  # noqa: E402
from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.unet import UNet

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "unet_throughput.md"
PEER_EXPECTED_PARAMS = 1_707_009  # UNet2DModel with the course's settings
# Hand-written notes from this heading on survive when the benchmark rewrites the results file.
KEPT_HEADING = "## Design notes"


@dataclass
class Contender:
    name: str
    model: nn.Module
    conditional: bool
    optimizer: torch.optim.Optimizer = field(init=False)
    wall_rates: list[float] = field(default_factory=list)  # images/s per repeat
    cpu_rates: list[float] = field(default_factory=list)  # images per CPU-second (all threads) per repeat

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def step(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> None:
        """One training step: MSE to `target`, backward, AdamW."""
        if self.conditional:
            out = self.model(x, t.float(), labels)
        else:
            out = self.model(x, t).sample  # diffusers returns an output object
        loss = (out - target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def project_unet() -> nn.Module:
    """The project's default U-Net (ModelConfig defaults), class-conditional on the 10 digits."""
    return UNet(ModelConfig(num_classes=10))


def load_average() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(contenders: list[Contender], batch: int, warmup: int, steps: int, repeats: int, seed: int) -> None:
    """Warm each model up, then time `steps` steps of each, alternating the order every repeat."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)
    target = torch.randn(batch, 1, 28, 28, generator=g)
    for c in contenders:
        for _ in range(warmup):
            c.step(x, t, labels, target)
    for r in range(repeats):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                c.step(x, t, labels, target)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            c.wall_rates.append(batch * steps / wall)
            c.cpu_rates.append(batch * steps / cpu)
        print(f"repeat {r + 1}/{repeats}: "
              + ", ".join(f"{c.name} {c.wall_rates[-1]:.1f} img/s" for c in contenders), flush=True)


def markdown(results: dict[int, list[Contender]], args: argparse.Namespace, info: dict[str, str]) -> str:
    """The results file: one table per thread count, the speed-up, machine details and the command."""
    lines = [
        "# U-Net training throughput",
        "",
        f"Training step = forward + backward + AdamW step, batch {args.batch}, 1x28x28 inputs, {args.warmup} "
        f"warm-up steps, then {args.repeats} alternating repeats of {args.steps} timed steps per model; medians "
        "over repeats (min-max in brackets).",
    ]
    for threads, contenders in results.items():
        ours, peer = contenders
        ratio = statistics.median(ours.wall_rates) / statistics.median(peer.wall_rates)
        cpu_ratio = statistics.median(ours.cpu_rates) / statistics.median(peer.cpu_rates)
        lines += [
            "",
            f"## {threads} torch thread{'s' if threads > 1 else ''}",
            "",
            "| model | parameters | images/s (wall) | ms/step | images per CPU-second |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for c in contenders:
            med = statistics.median(c.wall_rates)
            lines.append(
                f"| {c.name} | {c.params:,} | {med:.1f} ({min(c.wall_rates):.1f}-{max(c.wall_rates):.1f}) "
                f"| {1000 * args.batch / med:.0f} | {statistics.median(c.cpu_rates):.1f} |"
            )
        lines += [
            "",
            f"**Speed-up of the project's U-Net with {threads} thread{'s' if threads > 1 else ''}: {ratio:.1f}x** "
            f"in images/s ({cpu_ratio:.1f}x in images per CPU-second).",
        ]
    lines += ["", "## Machine", "", "; ".join(f"{k}: {v}" for k, v in info.items()) + "."]
    if args.note:
        lines += ["", args.note]
    lines += ["", "Command:", "", "```", info_command(), "```", ""]
    return "\n".join(lines)


def info_command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                        help="torch CPU thread counts; the comparison runs once for each (default: 2 1)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown results file")
    parser.add_argument("--note", default="", help="a sentence to add to the results file (e.g. machine load)")
    args = parser.parse_args(argv)

    try:
        import diffusers
    except ImportError:
        print("diffusers is not installed, and the benchmark compares against its UNet2DModel; install the "
              "benchmark's requirements with: pip install -r benchmarks/requirements.txt", file=sys.stderr)
        return 2

    def build() -> list[Contender]:
        torch.manual_seed(args.seed)
        return [
            Contender("mnist-diffusion UNet (default config, 10 classes)", project_unet(), conditional=True),
            Contender("diffusers UNet2DModel (HF course unit 1)", course_unet(), conditional=False),
        ]

    peer_params = build()[1].params
    if abs(peer_params - PEER_EXPECTED_PARAMS) > 0.05 * PEER_EXPECTED_PARAMS:
        print(f"warning: UNet2DModel has {peer_params:,} parameters, expected about {PEER_EXPECTED_PARAMS:,}; "
              "this diffusers version builds the course's model differently", file=sys.stderr)

    info = {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "threads": ", ".join(str(n) for n in args.threads),
        "Python": platform.python_version(),
        "load average (1/5/15 min) at start": load_average(),
    }
    for k, v in info.items():
        print(f"{k}: {v}")

    results: dict[int, list[Contender]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        contenders = build()  # fresh models and optimizers for every thread count
        print(f"-- {threads} thread(s): " + ", ".join(f"{c.name} {c.params:,} parameters" for c in contenders))
        run(contenders, args.batch, args.warmup, args.steps, args.repeats, args.seed)
        ours, peer = contenders
        for c in contenders:
            print(f"{c.name}: median {statistics.median(c.wall_rates):.1f} img/s, "
                  f"{statistics.median(c.cpu_rates):.1f} img per CPU-second, {c.params:,} parameters")
        ratio = statistics.median(ours.wall_rates) / statistics.median(peer.wall_rates)
        print(f"ratio (project / diffusers) with {threads} thread(s): {ratio:.2f}x", flush=True)
        results[threads] = contenders
    info["load average at end"] = load_average()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    kept = ""
    if args.output.exists():
        old = args.output.read_text()
        if KEPT_HEADING in old:
            kept = "\n" + old[old.index(KEPT_HEADING):]
    args.output.write_text(markdown(results, args, info) + kept)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
