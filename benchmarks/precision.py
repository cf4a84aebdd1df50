"""fp32 against bf16 on this machine: matmul peaks, sampling and training images/s, and whether bf16 draws the same
digits.

One run measures, in order (fp32 and bf16 always timed in turn, so a busy neighbour slows both alike):
  1. what `--precision auto` picks here and why (`mnist_diffusion.precision`), the fp32 and bf16 `torch.mm`
     GFLOP/s on (N, N) matrices with every intra-op thread (the two "peaks"), and the conv probe `auto` uses;
  2. sampling images/s of the packaged `ddpm-cond` and `ldm` at their defaults (each model's own sampler, steps
     and guidance), loaded with precision fp32 and bf16, and the share of the matching peak (FLOPs per image from
     torch's FlopCounterMode: convolutions, matrix products and attention only, so a lower bound);
  3. training images/s of each recipe through the package's own step (`make_trainer` + `train_step`) with
     train.precision fp32 and bf16 (bf16 autocast, fp32 master weights), the same seed, data and noise, so the
     mean loss over the timed steps compares the numerics at equal steps; then --curve-steps of ddpm-cond in
     each, the loss curves overlaid in precision_loss.png;
  4. with --compile, one network forward of each packaged model in fp32, bf16 and bf16 under torch.compile;
  5. GroupNorm on bf16 channels_last maps: torch's kernel against the package's;
  6. the quality check: each packaged model samples --n digits (labels 0-9 in turn) at fp32 and at bf16 on the
     same seeds, plus fp32 on other seeds (how much FID moves from one draw to another at this N); the share
     of pixels that differ between fp32 and bf16, and FID and label accuracy from the packaged evaluator.

    python benchmarks/precision.py                      # on a CPU with AMX: FID@2000, 128 images per speed figure
    python benchmarks/precision.py --n 60 --sample-n 16 --train-steps 2 --recipes seed ddpm-cond ldm   # small

Writes benchmarks/results/precision.md (--out). On a CPU without AMX-BF16 / AVX-512-BF16 bf16 runs in emulation,
many times slower; the results then say so, and `auto` keeps fp32 there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

# OpenMP's waiting as under the `mnist-diffusion` command (mnist_diffusion.openmp); set before torch loads.
import mnist_diffusion  # noqa: E402, F401

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _flops import count_flops, matmul_gflops  # noqa: E402
from _machine import machine_info  # noqa: E402
from mnist_diffusion.config import apply_overrides  # noqa: E402
from mnist_diffusion.evaluation.report import evaluate_images  # noqa: E402
from mnist_diffusion.files import atomic_write_text  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402
from mnist_diffusion.precision import PROBE_CONV, PrecisionChoice, conv_gflops, cpu_bf16_units, resolve_precision  # noqa: E402
from mnist_diffusion.training.loop import make_trainer  # noqa: E402
from train_throughput import ORDER, batch_stream, recipe_config  # noqa: E402

PRECISIONS = ("fp32", "bf16")
MODELS = ("ddpm-cond", "ldm")


def log(text: str) -> None:
    print(text, flush=True)


def sampling(model: str, args) -> dict:
    """Images/s of `Pipeline.sample` at the model's defaults, fp32 and bf16 loaded side by side and timed in
    turn (median over --repeats; interleaving keeps a busy neighbour from favouring one), FLOPs per image."""
    pipes = {p: load(model, precision=p) for p in PRECISIONS}
    for pipe in pipes.values():
        pipe.sample(min(8, args.sample_n), steps=2)  # warm-up: kernels, buffers, the autoencoder
    rates = {p: [] for p in PRECISIONS}
    for _ in range(args.repeats):
        for p, pipe in pipes.items():
            t0 = time.perf_counter()
            pipe.sample(args.sample_n)
            rates[p].append(args.sample_n / (time.perf_counter() - t0))
    flops = count_flops(lambda: pipes["fp32"].sample(2, batch_size=2)) / 2
    return {p: {"ips": statistics.median(rates[p]), "flops": flops, "reason": pipes[p].precision.reason}
            for p in PRECISIONS}


def _trainer(recipe: str, precision: str, args, tmp: Path, overrides: tuple[str, ...] = ()):
    """A trainer of `recipe` at train.precision `precision` (plus `overrides`, KEY=VALUE), its config and its
    batches; the same seed, data and noise for every precision."""
    ns = Namespace(threads=args.threads, batch_size=None, data_limit=args.data_limit, set=[])
    cfg = apply_overrides(recipe_config(recipe, ns, tmp), [f"train.precision={precision}", *overrides])
    trainer = make_trainer(cfg, tmp / "-".join([recipe, precision, *overrides]))
    trainer.net.train()
    return cfg, trainer, batch_stream(trainer)


def timed_rounds(runs: dict, steps: int, rounds: int, on_round=None) -> tuple[dict, dict]:
    """Training images/s of each run (name -> (cfg, trainer, batches)) per round, every run in turn each round
    (so a busy neighbour slows all alike), and the loss of every timed step: (rates, losses) by name."""
    rates, losses = {n: [] for n in runs}, {n: [] for n in runs}
    for r in range(rounds):
        for name, (cfg, trainer, batches) in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                losses[name].append(trainer.train_step(*next(batches))["loss"].item())
            rates[name].append(steps * cfg.train.batch_size / (time.perf_counter() - t0))
        if on_round:
            on_round(r, rates)
    return rates, losses


def training(recipe: str, args, tmp: Path) -> dict:
    """Training images/s of `recipe` at fp32 and bf16 (two trainers with the same seed, data and noise, timed
    in turn, median over repeats after warm-up), the mean loss of the timed steps, FLOPs per image."""
    runs = {p: _trainer(recipe, p, args, tmp) for p in PRECISIONS}
    for _cfg, trainer, batches in runs.values():
        for _ in range(args.train_warmup):
            trainer.train_step(*next(batches))
    rates, losses = timed_rounds(runs, args.train_steps, args.repeats)
    cfg, trainer, batches = runs["fp32"]
    x, labels = next(batches)
    flops = count_flops(lambda: trainer.objective(trainer.net, x, labels, trainer.generator)["loss"].backward())
    return {p: {"ips": statistics.median(rates[p]), "loss": statistics.fmean(losses[p]), "flops": flops / len(x),
                "batch": cfg.train.batch_size} for p in PRECISIONS}


def loss_curves(recipe: str, args, tmp: Path) -> dict:
    """The loss at each of --curve-steps training steps of `recipe` in fp32 and in bf16 autocast, from the same
    seed, data and noise."""
    curves = {}
    for p in PRECISIONS:
        _cfg, trainer, batches = _trainer(recipe, p, args, tmp / "curves")
        curves[p] = [trainer.train_step(*next(batches))["loss"].item() for _ in range(args.curve_steps)]
    return curves


def plot_curves(curves: dict, recipe: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    for p, losses in curves.items():
        ema, smooth = losses[0], []
        for v in losses:
            ema = 0.9 * ema + 0.1 * v
            smooth.append(ema)
        ax.plot(losses, alpha=0.25, lw=0.8, color="C0" if p == "fp32" else "C1")
        ax.plot(smooth, lw=1.6, color="C0" if p == "fp32" else "C1", label=f"{p} (EMA 0.9)")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(f"{recipe}: fp32 vs bf16 autocast, same seed, data and noise", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def compiled_forward(model: str, args) -> dict:
    """ms per network forward at batch --compile-batch (the sampler's guided batch): fp32 eager, bf16 eager and
    bf16 under torch.compile (inductor), interleaved, median of 7; and the compile time."""
    pipes = {p: load(model, precision=p) for p in PRECISIONS}
    b = args.compile_batch
    x = torch.randn(b, *pipes["fp32"].sample_shape).contiguous(memory_format=torch.channels_last)
    t, labels = torch.full((b,), 500.0), torch.arange(b) % 10
    with torch.inference_mode():
        t0 = time.perf_counter()
        compiled = torch.compile(pipes["bf16"].net, dynamic=False)
        compiled(x, t, labels)
        compile_s = time.perf_counter() - t0
        nets = {"fp32": pipes["fp32"].net, "bf16": pipes["bf16"].net, "bf16 compiled": compiled}
        times = {k: [] for k in nets}
        for net in nets.values():
            net(x, t, labels)
        for _ in range(7):
            for k, net in nets.items():
                t0 = time.perf_counter()
                net(x, t, labels)
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {"compile_s": compile_s, **{k: statistics.median(v) for k, v in times.items()}}


def groupnorm(args) -> dict:
    """GroupNorm in bf16 channels_last: the 14 calls of one packaged `ddpm-cond` forward (batch --gn-batch)
    through torch's kernel and through the package's `GroupNorm`, interleaved, median over rounds; and the
    128x64x28x28 map alone, in each layout and dtype."""
    from torch import nn

    from mnist_diffusion.models import blocks

    pipe = load("ddpm-cond", precision="bf16")
    calls = []
    def keep(module, args):
        calls.append((module, args[0].clone(memory_format=torch.preserve_format)))

    hooks = [m.register_forward_pre_hook(keep) for m in pipe.net.modules() if isinstance(m, blocks.GroupNorm)]
    b = args.gn_batch
    with torch.inference_mode():
        pipe.net(torch.randn(b, 1, 28, 28), torch.full((b,), 500.0), torch.arange(b) % 10)
    for h in hooks:
        h.remove()
    x = torch.randn(128, 64, 28, 28)
    norm = nn.GroupNorm(8, 64)
    single = {
        "fp32 NCHW": lambda: nn.GroupNorm.forward(norm, x),
        "fp32 channels_last": lambda: nn.GroupNorm.forward(norm, x_cl),
        "bf16 NCHW": lambda: nn.GroupNorm.forward(norm_bf16, x_bf16),
        "bf16 channels_last, torch's kernel": lambda: nn.GroupNorm.forward(norm_bf16, x_bf16_cl),
        "bf16 channels_last, package GroupNorm": lambda: blocks.GroupNorm.forward(norm_bf16, x_bf16_cl),
    }
    x_cl = x.contiguous(memory_format=torch.channels_last)
    norm_bf16 = nn.GroupNorm(8, 64).to(torch.bfloat16)
    x_bf16 = x.to(torch.bfloat16)
    x_bf16_cl = x_bf16.contiguous(memory_format=torch.channels_last)
    whole = {"torch": nn.GroupNorm.forward, "package": blocks.GroupNorm.forward}
    times = {k: [] for k in [*whole, *single]}
    with torch.inference_mode():
        for _ in range(args.gn_rounds):
            for k, forward in whole.items():
                t0 = time.perf_counter()
                for m, inp in calls:
                    forward(m, inp)
                times[k].append(time.perf_counter() - t0)
            for k, fn in single.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {"calls": len(calls), **{k: statistics.median(v) * 1e3 for k, v in times.items()}}


DRAWS = {"fp32": ("fp32", False, 0), "bf16": ("bf16", False, 0), "fp32, other seeds": ("fp32", False, None)}


def quality(model: str, n: int, draws: dict = DRAWS) -> dict:
    """Digits of each draw (name -> (precision, compile, first seed; None = seeds n..2n-1, another fp32 draw))
    on the same seeds: FID, label accuracy and, for same-seed draws, the pixels that differ from fp32's."""
    out = {}
    for key, (precision, compile, seed) in draws.items():
        t0 = time.perf_counter()
        result = load(model, precision=precision, compile=compile).sample(n, labels="0-9",
                                                                          seed=n if seed is None else seed)
        seconds = time.perf_counter() - t0
        report = evaluate_images(result.images, result.labels, metrics=["fid", "label_accuracy"], with_baselines=False)
        out[key] = {"images": result.images, "fid": report["samples"]["fid"],
                    "acc": report["samples"]["label_accuracy"], "seconds": seconds, "same_seeds": seed is not None}
        log(f"  {model} {key}: FID@{n} {out[key]['fid']:.3f}, label accuracy {out[key]['acc']:.1%} "
            f"({seconds:.0f} s)")
    for v in out.values():
        if v["same_seeds"]:
            diff = np.abs(out["fp32"]["images"].astype(int) - v["images"].astype(int))
            v["differ"] = {"any": float((diff > 0).mean()), "over32": float((diff > 32).mean()),
                           "mean": float(diff.mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="digits per model and numerics for the quality check")
    ap.add_argument("--sample-n", type=int, default=128, help="digits per sampling-speed repeat")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats, fp32 and bf16 in turn (median)")
    ap.add_argument("--recipes", nargs="+", default=list(ORDER), choices=ORDER)
    ap.add_argument("--train-steps", type=int, default=5, help="timed training steps per repeat")
    ap.add_argument("--train-warmup", type=int, default=1)
    ap.add_argument("--data-limit", type=int, default=4096, help="training images the recipes index")
    ap.add_argument("--matmul-n", type=int, default=1024, help="size of the square matrices of the peaks")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--curve-steps", type=int, default=150, help="steps of the ddpm-cond loss curves (0: none)")
    ap.add_argument("--compile", action="store_true", help="also time the bf16 networks under torch.compile")
    ap.add_argument("--compile-batch", type=int, default=128, help="batch of the torch.compile measurement")
    ap.add_argument("--gn-batch", type=int, default=128, help="batch of the GroupNorm measurement")
    ap.add_argument("--gn-rounds", type=int, default=7, help="rounds of the GroupNorm measurement (median)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    machine = machine_info()
    units, found = cpu_bf16_units()
    auto_sample, auto_train = resolve_precision("auto", "cpu", "sample"), resolve_precision("auto", "cpu", "train")
    log(machine)
    log(f"--precision auto here: sampling {auto_sample}; training {auto_train}")
    peak = {"fp32": matmul_gflops(args.matmul_n, torch.float32),
            "bf16": matmul_gflops(args.matmul_n, torch.bfloat16, repeats=3, max_seconds=10)}
    log(f"matmul {args.matmul_n}x{args.matmul_n}: fp32 {peak['fp32']:.1f}, bf16 {peak['bf16']:.1f} GFLOP/s")
    conv = {p: conv_gflops(PrecisionChoice(p, "benchmark").dtype, repeats=7) for p in PRECISIONS}
    log(f"probe conv {PROBE_CONV}: fp32 {conv['fp32']:.1f}, bf16 {conv['bf16']:.1f} GFLOP/s")

    samples = {}
    for model in MODELS:
        for p, r in sampling(model, args).items():
            samples[model, p] = r
            log(f"sampling {model} {p}: {r['ips']:.2f} images/s ({r['ips'] * r['flops'] / 1e9 / peak[p]:.0%} of "
                f"the {p} peak)")
    trains, curves = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            for p, r in training(recipe, args, Path(tmp)).items():
                trains[recipe, p] = r
                log(f"training {recipe} {p}: {r['ips']:.1f} images/s, mean loss {r['loss']:.4f}")
        if args.curve_steps:
            curves = loss_curves("ddpm-cond", args, Path(tmp))
    compiled = {}
    if args.compile:
        for model in MODELS:
            compiled[model] = c = compiled_forward(model, args)
            log(f"forward {model}: fp32 {c['fp32']:.1f} ms, bf16 {c['bf16']:.1f} ms, bf16 compiled "
                f"{c['bf16 compiled']:.1f} ms (compiled in {c['compile_s']:.0f} s)")
    norms = groupnorm(args)
    log(f"GroupNorm, one bf16 channels_last ddpm-cond forward: torch's kernel {norms['torch']:.1f} ms, "
        f"package GroupNorm {norms['package']:.1f} ms")
    checks = {model: quality(model, args.n) for model in MODELS} if args.n else {}
    elapsed = time.perf_counter() - started
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    lines = [
        "# fp32 against bf16: speed and digits", "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip()
        + f" ({elapsed / 60:.1f} min)",
        "", f"Machine: {machine}; 1-minute load average at the end {load:.1f} (other processes share the cores)",
        "",
        f"`--precision auto` here: sampling **{auto_sample.precision}** ({auto_sample.reason}); training "
        f"**{auto_train.precision}** ({auto_train.reason}).", "",
    ]
    if not units:
        lines += [f"**This processor has {found}: bf16 runs without matrix units here, so every bf16 figure "
                  "below shows emulation, not what bf16 does on a CPU with AMX; `auto` chose fp32.** The "
                  "quality check is valid on any CPU (bf16 rounds the same way everywhere). A share of the bf16 "
                  "peak above 100% means the convolutions (oneDNN) ran bf16 faster than `torch.mm` did.", ""]
    lines += [f"Matmul peaks ({args.matmul_n}x{args.matmul_n} `torch.mm`, {torch.get_num_threads()} threads): "
              f"fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s "
              f"({peak['bf16'] / peak['fp32']:.2f}x). The probe `auto` times, a 3x3 conv on a channels_last "
              f"{PROBE_CONV} (batch, channels, side) map: fp32 {conv['fp32']:.1f}, bf16 {conv['bf16']:.1f} GFLOP/s "
              f"({conv['bf16'] / conv['fp32']:.2f}x).", "",
              f"## Sampling ({args.sample_n} digits, the model's defaults, median of {args.repeats})", "",
              "| model | fp32 images/s | bf16 images/s | bf16 / fp32 | GFLOP per image | share of fp32 peak | "
              "share of bf16 peak |", "|---|---|---|---|---|---|---|"]
    for model in MODELS:
        a, b = samples[model, "fp32"], samples[model, "bf16"]
        lines.append(f"| {model} | {a['ips']:.2f} | {b['ips']:.2f} | {b['ips'] / a['ips']:.2f}x | "
                     f"{a['flops'] / 1e9:.2f} | {a['ips'] * a['flops'] / 1e9 / peak['fp32']:.0%} | "
                     f"{b['ips'] * b['flops'] / 1e9 / peak['bf16']:.0%} |")
    lines += ["", f"## Training ({args.train_steps} steps x {args.repeats} after {args.train_warmup} warm-up, "
              "the recipe's batch; bf16 = autocast with fp32 master weights)", "",
              "| recipe | batch | fp32 images/s | bf16 images/s | bf16 / fp32 | share of fp32 peak | share of bf16 "
              "peak | mean loss fp32 | mean loss bf16 |", "|---|---|---|---|---|---|---|---|---|"]
    for recipe in args.recipes:
        a, b = trains[recipe, "fp32"], trains[recipe, "bf16"]
        lines.append(f"| {recipe} | {a['batch']} | {a['ips']:.1f} | {b['ips']:.1f} | {b['ips'] / a['ips']:.2f}x | "
                     f"{a['ips'] * a['flops'] / 1e9 / peak['fp32']:.0%} | "
                     f"{b['ips'] * b['flops'] / 1e9 / peak['bf16']:.0%} | {a['loss']:.4f} | {b['loss']:.4f} |")
    if curves:
        half = args.curve_steps // 2
        late = {p: statistics.fmean(v[half:]) for p, v in curves.items()}
        lines += ["", f"## Loss curves: ddpm-cond, {args.curve_steps} steps from the same seed, data and noise", "",
                  f"![loss curves]({args.out.stem}_loss.png)", "",
                  f"Mean loss over steps {half}..{args.curve_steps - 1}: fp32 {late['fp32']:.4f}, bf16 "
                  f"{late['bf16']:.4f} (difference {late['bf16'] - late['fp32']:+.4f}); first step fp32 "
                  f"{curves['fp32'][0]:.4f}, bf16 {curves['bf16'][0]:.4f}."]
    if compiled:
        lines += ["", f"## torch.compile: one network forward at batch {args.compile_batch} (median of 7, "
                  "interleaved)", "", "| model | fp32 ms | bf16 ms | bf16 compiled ms | bf16 / fp32 | compiled / fp32 "
                  "| compile time |", "|---|---|---|---|---|---|---|"]
        for model, c in compiled.items():
            lines.append(f"| {model} | {c['fp32']:.1f} | {c['bf16']:.1f} | {c['bf16 compiled']:.1f} | "
                         f"{c['fp32'] / c['bf16']:.2f}x | {c['fp32'] / c['bf16 compiled']:.2f}x | "
                         f"{c['compile_s']:.0f} s |")
    lines += ["", "## GroupNorm in bf16 channels_last (median of "
              f"{args.gn_rounds} interleaved rounds)", "",
              f"All {norms['calls']} GroupNorm calls of one packaged `ddpm-cond` forward at batch {args.gn_batch}, "
              f"bf16 weights, channels_last: torch's kernel {norms['torch']:.1f} ms, the package's "
              f"`GroupNorm` {norms['package']:.1f} ms "
              f"({norms['torch'] / norms['package']:.2f}x).", "",
              "| one 128x64x28x28 map | ms |", "|---|---|"]
    lines += [f"| {k} | {norms[k]:.1f} |" for k in ("fp32 NCHW", "fp32 channels_last", "bf16 NCHW",
                                                    "bf16 channels_last, torch's kernel",
                                                    "bf16 channels_last, package GroupNorm")]
    if checks:
        lines += ["", f"## Quality: {args.n} digits per model (labels 0-9 in turn), seeds 0..{args.n - 1}", "",
                  "Pixels that differ: share of all pixels of the fp32 and bf16 images (same seeds) that differ at "
                  "all / by more than 32 of 255. \"fp32, other seeds\" (seeds "
                  f"{args.n}..{2 * args.n - 1}) shows how far FID moves between two fp32 draws at this N.", "",
                  "| model | FID fp32 | FID bf16 | FID fp32, other seeds | label acc. fp32 | label acc. bf16 | "
                  "pixels differ | by > 32/255 | mean abs. difference |", "|---|---|---|---|---|---|---|---|---|"]
        for model, c in checks.items():
            d = c["bf16"]["differ"]
            lines.append(f"| {model} | {c['fp32']['fid']:.3f} | {c['bf16']['fid']:.3f} | "
                         f"{c['fp32, other seeds']['fid']:.3f} | {c['fp32']['acc']:.1%} | {c['bf16']['acc']:.1%} | "
                         f"{d['any']:.1%} | {d['over32']:.2%} | {d['mean']:.2f}/255 |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
        if curves:
            plot_curves(curves, "ddpm-cond", args.out.with_name(args.out.stem + "_loss.png"))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
