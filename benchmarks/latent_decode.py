"""What decoding in bf16 adds to a bf16 latent pipeline: `ldm` with its autoencoder in bf16 against fp32.

    python benchmarks/latent_decode.py                     # eager and compiled, 256 digits a call, 7 rounds

Two bf16 pipelines of one model, alike but for the autoencoder's weights (bf16, as `Pipeline` loads them for a
bf16 pipeline, or cast back to fp32), draw the same digits in turn, round after round (a busy neighbour slows
both alike); the median images/s count. Also: the decoder alone on 256 latents in both numerics and layouts, and
how far the bf16 decoder's images move from the fp32 decoder's on the same latents. Writes
benchmarks/results/latent_decode.md (or --out) with the command and the machine.
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import mnist_diffusion  # noqa: F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import write_table  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.inference_mode()
def decoder_alone(model: str, n: int, repeats: int) -> tuple[list[str], float, float]:
    """Table rows (numerics, layout, ms for n latents) and the bf16 decoder's mean / max abs. difference from fp32
    on the same latents, in the data range [-1, 1]."""
    ae = load(model, precision="fp32").autoencoder
    z = torch.randn(n, *ae.latent_shape, generator=torch.Generator().manual_seed(0))
    rows, outputs = [], {}
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            net = copy.deepcopy(ae.net).to(dtype).to(memory_format=layout)
            x = z.to(dtype).contiguous(memory_format=layout)
            ms = 1e3 * median_seconds(lambda: net.decode(x), repeats)  # noqa: B023
            outputs[dtype] = net.decode(x).float()
            name = "NCHW" if layout == torch.contiguous_format else "channels_last"
            rows.append(f"| {str(dtype)[6:]} | {name} | {ms:.1f} |")
    diff = (outputs[torch.bfloat16] - outputs[torch.float32]).abs()
    return rows, diff.mean().item(), diff.max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ldm")
    ap.add_argument("--n", type=int, default=256, help="digits per timed call")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latent_decode.md")
    args = ap.parse_args()
    started = time.perf_counter()

    rows = []
    for compile in (False, True):
        pipes = {"bf16": load(args.model, precision="bf16", compile=compile),
                 "fp32": load(args.model, precision="bf16", compile=compile)}
        pipes["fp32"].autoencoder.net.float()
        rates = {k: [] for k in pipes}
        for pipe in pipes.values():
            pipe.sample(args.n, seed=0)  # warm-up (and the compile)
        for _ in range(args.rounds):
            for k, pipe in pipes.items():
                t0 = time.perf_counter()
                pipe.sample(args.n, seed=1)
                rates[k].append(args.n / (time.perf_counter() - t0))
        bf16, fp32 = (statistics.median(rates[k]) for k in ("bf16", "fp32"))
        rows.append(f"| {'compiled' if compile else 'eager'} | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.3f}x |")
        print(rows[-1], flush=True)
    alone, mean_diff, max_diff = decoder_alone(args.model, args.n, args.rounds)

    lines = [
        f"# Decoding in bf16: `{args.model}` sampled in bf16 with its autoencoder in bf16 or fp32", "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip()
        + f" ({(time.perf_counter() - started) / 60:.1f} min)", "",
        f"Machine: {machine_info()}", "",
        f"## Sampling: {args.n} digits a call at the model's defaults, the two pipelines in turn, median of "
        f"{args.rounds}", "",
        "| network | images/s, fp32 decoder | images/s, bf16 decoder | bf16 / fp32 decoder |", "|---|---|---|---|",
        *rows, "",
        f"## The decoder alone: {args.n} latents, median of {args.rounds}", "",
        "| numerics | layout | ms |", "|---|---|---|", *alone, "",
        f"bf16 against fp32 decoding of the same latents (images in [-1, 1]): mean absolute difference "
        f"{mean_diff:.5f} ({mean_diff * 127.5:.2f}/255), largest {max_diff:.4f} ({max_diff * 127.5:.1f}/255).",
    ]
    write_table(args.out, lines)


if __name__ == "__main__":
    main()
