"""Training and sampling speed on a CUDA GPU for each numerics setting the package offers.

Training, per recipe, through the package itself (`make_trainer` + `Trainer.train_step`, the recipe's batch
unless --batch-size): fp32, bf16 autocast, bf16 + channels_last, and bf16 + channels_last + torch.compile.
Each variant takes --warmup untimed steps (compilation included) and then --steps timed ones between two
`torch.cuda.synchronize()` calls; the reported figure is images/s over the timed steps.

Sampling: `Pipeline.sample` on the freshly initialised network with the recipe's default sampler, steps and
guidance, --sample-n images in batches of --sample-batch, after a two-step warm-up (speed does not depend on the
weights).

    python benchmarks/cuda_throughput.py                      # writes benchmarks/results/cuda_throughput.md
    python benchmarks/cuda_throughput.py --recipes ldm --steps 50 --no-write

Exits with a sentence when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from mnist_diffusion.recipes import RECIPES  # noqa: E402
from mnist_diffusion.training.loop import make_trainer  # noqa: E402
from train_throughput import batch_stream, recipe_config  # noqa: E402

VARIANTS = {
    "fp32": ["train.precision=fp32"],
    "bf16": ["train.precision=bf16"],
    "bf16 + channels_last": ["train.precision=bf16", "train.channels_last=true"],
    "bf16 + channels_last + compile": ["train.precision=bf16", "train.channels_last=true", "train.compile=true"],
}


def synced() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def train_ips(recipe: str, sets: list[str], args: argparse.Namespace, tmp: Path) -> tuple[float, float]:
    """(images/s over the timed steps, seconds of the warm-up steps) for one recipe and variant."""
    ns = argparse.Namespace(threads=None, batch_size=args.batch_size, data_limit=args.data_limit,
                            set=["train.device=cuda", *sets])
    cfg = recipe_config(recipe, ns, tmp)
    trainer = make_trainer(cfg, tmp / f"{recipe}-{len(sets)}")
    trainer.net.train()
    batches = batch_stream(trainer)
    t0 = synced()
    for _ in range(args.warmup):
        trainer.train_step(*next(batches))
    t1 = synced()
    for _ in range(args.steps):
        trainer.train_step(*next(batches))
    return args.steps * cfg.train.batch_size / (synced() - t1), t1 - t0


def sample_ips(recipe: str, args: argparse.Namespace, tmp: Path) -> tuple[str, float]:
    """(sampler description, images/s of `Pipeline.sample`) on the recipe's freshly initialised network."""
    from mnist_diffusion.pipeline import Pipeline, sampling_layout

    ns = argparse.Namespace(threads=None, batch_size=None, data_limit=args.data_limit, set=["train.device=cuda"])
    cfg = recipe_config(recipe, ns, tmp)
    trainer = make_trainer(cfg, tmp / f"{recipe}-sample")
    net = sampling_layout(trainer.net.eval(), "cuda")
    pipe = Pipeline(trainer.cfg, net, torch.device("cuda"))  # trainer.cfg records the autoencoder hash
    pipe.sample(args.sample_batch, steps=2, batch_size=args.sample_batch)
    t0 = synced()
    pipe.sample(args.sample_n, batch_size=args.sample_batch)
    rate = args.sample_n / (synced() - t0)
    s = cfg.sample
    guided = f", guidance {s.guidance:g}" if cfg.model.num_classes and s.guidance != 1.0 else ""
    return f"{s.sampler} x{s.steps}{guided}", rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["ddpm-cond", "ldm", "seed"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: the recipe's)")
    ap.add_argument("--steps", type=int, default=200, help="timed training steps per variant")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first (compilation happens here)")
    ap.add_argument("--data-limit", type=int, default=16384, help="training images loaded per recipe")
    ap.add_argument("--sample-n", type=int, default=10_000)
    ap.add_argument("--sample-batch", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cuda_throughput.md")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("cuda_throughput.py needs a CUDA GPU, and this torch build sees none.")
    gpu = f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    lines = ["# Training and sampling speed on a CUDA GPU", "",
             f"Command: `python benchmarks/cuda_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"GPU: {gpu}", f"Host: {machine_info()}", "",
             f"Training: images/s over {args.steps} timed steps after {args.warmup} warm-up steps.", "",
             "| recipe | batch | " + " | ".join(args.variants) + " | sampling (default sampler) | sampling img/s |",
             "|---|---:|" + "---:|" * len(args.variants) + "---|---:|"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for recipe in args.recipes:
            cells = []
            for name in args.variants:
                ips, warm = train_ips(recipe, VARIANTS[name], args, tmp)
                print(f"{recipe} {name}: {ips:,.0f} img/s (warm-up {warm:.1f} s)", flush=True)
                cells.append(f"{ips:,.0f}")
            sampler, rate = sample_ips(recipe, args, tmp)
            print(f"{recipe} sampling {sampler}: {rate:,.0f} img/s", flush=True)
            batch = args.batch_size or RECIPES[recipe].train.batch_size
            lines.append(f"| {recipe} | {batch} | " + " | ".join(cells) + f" | {sampler} | {rate:,.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
