"""Training and sampling throughput of every recipe, set against this machine's measured matmul peak.

One run measures, in order:
  1. the machine: fp32 `torch.mm` GFLOP/s on large square matrices with all intra-op threads (the "peak"),
     and bf16 against fp32 at a smaller size (very slow on CPUs without native bf16 instructions);
  2. per recipe, training images/s through the package itself (`make_trainer` + `Trainer.batch` +
     `Trainer.train_step`: data indexing, loss, backward, clipping, AdamW, EMA), median over repeats after a
     warm-up, and the FLOPs of one forward + backward per image, hence achieved GFLOP/s and share of peak;
  3. per diffusion recipe, sampling images/s of `Pipeline.sample` with the recipe's default sampler, steps and
     guidance on the freshly initialised network (speed does not depend on the weights), and its FLOPs/image.

FLOPs come from torch.utils.flop_counter.FlopCounterMode: matmuls and convolutions (and attention) only, not
elementwise work (GroupNorm, SiLU, the optimizer), so the GFLOP/s figures are lower bounds. The latent recipe
uses the packaged `ldm-ae` autoencoder when the package ships one, else a freshly initialised one.

    python benchmarks/train_throughput.py                       # full run, writes results/train_throughput.md
    python benchmarks/train_throughput.py --quick               # smoke run, a minute or two
    python benchmarks/train_throughput.py --recipes ddpm-cond --set train.channels_last=true --no-write
    python benchmarks/train_throughput.py --recipes ddpm-cond --profile 5 --no-write
    python benchmarks/train_throughput.py --recipes ddpm-cond --compare threads=1 --compare channels_last

`--compare` builds one trainer per variant and times them in turn, round after round, so load from other
processes hits all of them alike (see docs/performance.md for the results). On a shared machine run with
OMP_WAIT_POLICY=PASSIVE in the environment, or OpenMP's spinning threads dominate every number.

A recipe that cannot be built (say a missing autoencoder) is skipped with a line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

# The OpenMP settings exported by whoever ran this, read before `import mnist_diffusion`, which fills in
# OMP_WAIT_POLICY=PASSIVE when it is unset -- too late to change OpenMP here (it started with torch above), so
# reporting the variable afterwards would name a setting that was not in force.
ENV_AT_START = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}

sys.path.insert(0, str(Path(__file__).parent))
from _flops import count_flops, matmul_gflops  # noqa: E402
from _machine import machine_info  # noqa: E402
from mnist_diffusion import checkpoint as ckpt  # noqa: E402
from mnist_diffusion.config import RunConfig, apply_overrides, with_changes  # noqa: E402
from mnist_diffusion.errors import UserError  # noqa: E402
from mnist_diffusion.recipes import RECIPES  # noqa: E402
from mnist_diffusion.training.data_order import epoch_batches  # noqa: E402
from mnist_diffusion.training.loop import Trainer, make_trainer  # noqa: E402

ORDER = ("seed", "ddpm", "ddpm-cond", "ldm-ae", "ldm")


@dataclass
class Result:
    recipe: str
    skipped: str = ""  # why the recipe could not be measured; empty when it was
    params: int = 0
    batch_size: int = 0
    setup_s: float = 0.0  # make_trainer (data, model, autoencoder binding)
    warmup_s: float = 0.0  # the warm-up steps (includes torch.compile's compilation when it is on)
    train_ips: list[float] = field(default_factory=list)  # images/s of each repeat
    loss: float = float("nan")  # mean loss over the timed steps (for comparing numerics settings)
    train_flops: float = 0.0  # forward + backward FLOPs per image
    sampler: str = ""
    sample_ips: list[float] = field(default_factory=list)
    sample_flops: float = 0.0  # FLOPs per generated image
    sample_note: str = ""


# ---- building a recipe --------------------------------------------------------------------------------------
def autoencoder_reference(tmp: Path) -> str:
    """The packaged 'ldm-ae' if the package ships one, else a freshly initialised autoencoder saved in tmp."""
    from mnist_diffusion.assets import packaged_path
    from mnist_diffusion.models import build_model

    try:
        packaged_path("ldm-ae")
        return "ldm-ae"
    except UserError:
        pass
    path = tmp / "ldm-ae-init.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        ae_cfg = RECIPES["ldm-ae"]
        ckpt.save_model(path, ae_cfg, build_model(ae_cfg.model).state_dict(), {"step": 0})
    return str(path)


def recipe_config(name: str, args: argparse.Namespace, tmp: Path) -> RunConfig:
    cfg = RECIPES[name]
    train = {"device": "cpu", "threads": args.threads, "precision": "fp32"}  # bf16: --cpu-bf16, precision.py
    if args.batch_size:
        train["batch_size"] = args.batch_size
    # A few thousand images are plenty: indexing cost does not depend on the data set's size, and the latent
    # recipe measures its latent scale on (at most 10,000 of) these images at start-up.
    cfg = with_changes(cfg, train=train, data={"limit": args.data_limit})
    if cfg.latent is not None:
        from dataclasses import replace

        cfg = replace(cfg, latent=replace(cfg.latent, autoencoder=autoencoder_reference(tmp)))
    return apply_overrides(cfg, args.set) if args.set else cfg


def batch_stream(trainer: Trainer):
    """Training batches (x, labels) in the package's own data order, epoch after epoch."""
    n, bs, seed = len(trainer.images), trainer.cfg.train.batch_size, trainer.cfg.train.seed
    epoch = 0
    while True:
        for _, idx in epoch_batches(n, bs, epoch, seed):
            yield trainer.batch(idx)
        epoch += 1


def cpu_autocast(enabled: bool):
    """bf16 autocast on the CPU around the package's fp32 step (what train.precision=bf16 does inside it)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# ---- measuring ----------------------------------------------------------------------------------------------
def measure_training(trainer: Trainer, res: Result, args: argparse.Namespace) -> None:
    batches = batch_stream(trainer)
    trainer.net.train()
    with cpu_autocast(args.cpu_bf16):
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainer.train_step(*next(batches))
        res.warmup_s = time.perf_counter() - t0
        losses = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                losses.append(trainer.train_step(*next(batches))["loss"].item())
            res.train_ips.append(args.steps * res.batch_size / (time.perf_counter() - t0))
    res.loss = statistics.fmean(losses)

    x, labels = next(batches)
    net = trainer.net  # the plain module: FLOPs are the same, and the counter does not trace compiled graphs

    def forward_backward():
        trainer.objective(net, x, labels, trainer.generator)["loss"].backward()

    res.train_flops = count_flops(forward_backward) / len(x)
    trainer.opt.zero_grad(set_to_none=True)


def measure_sampling(trainer: Trainer, res: Result, args: argparse.Namespace) -> None:
    from mnist_diffusion.pipeline import Pipeline, sampling_layout

    cfg = trainer.cfg
    if cfg.model.kind == "autoencoder":
        res.sample_note = "autoencoder: nothing to sample"
        return
    res.sampler = f"{cfg.sample.sampler} x{cfg.sample.steps}" + (
        f", guidance {cfg.sample.guidance:g}" if cfg.model.num_classes and cfg.sample.guidance != 1.0 else "")
    trainer.net.eval()
    sampling_layout(trainer.net, trainer.device)  # as pipeline.load() does
    pipe = Pipeline(cfg, trainer.net, trainer.device)
    grad_mode = torch.inference_mode() if args.inference_mode else contextlib.nullcontext()
    n, bs = args.sample_n, args.sample_batch
    with grad_mode, cpu_autocast(args.cpu_bf16):
        sampling_warmup(pipe, args)
        for _ in range(args.sample_repeats):
            t0 = time.perf_counter()
            pipe.sample(n, batch_size=bs)
            res.sample_ips.append(n / (time.perf_counter() - t0))
        # FLOPs grow linearly with the batch, so a few images give the per-image count exactly.
        res.sample_flops = count_flops(lambda: pipe.sample(4, batch_size=4)) / 4
    trainer.net.train()


def sampling_warmup(pipe, args: argparse.Namespace) -> None:
    """Two sampler steps on one full batch: kernels, buffers, a latent run's autoencoder, compilation."""
    pipe.sample(min(args.sample_batch, args.sample_n), steps=2, batch_size=args.sample_batch)


def profile_training(trainer: Trainer, steps: int, rows: int = 25) -> str:
    """torch.profiler's table of the operators that took the most CPU time over `steps` train steps."""
    from torch.profiler import ProfilerActivity, profile

    batches = batch_stream(trainer)
    trainer.net.train()
    for _ in range(2):
        trainer.train_step(*next(batches))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.train_step(*next(batches))
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# ---- A/B comparisons of CPU settings ------------------------------------------------------------------------
VARIANT_HELP = (
    "comma-separated settings compared against the recipe as it is: threads=N, batch=N (training), "
    "sample_batch=N, channels_last, compile, "
    "cpu_bf16 (bf16 autocast), no_mkldnn, inference_mode (sampling), foreach (AdamW foreach=True and a foreach "
    "EMA update -- a proposed change, not what the package does)"
)


@dataclass
class Variant:
    spec: str
    threads: int | None = None
    overrides: list[str] = field(default_factory=list)
    cpu_bf16: bool = False
    mkldnn: bool = True
    inference_mode: bool = False
    foreach: bool = False
    sample_batch: int | None = None


def parse_variant(spec: str) -> Variant:
    v = Variant(spec or "as is")
    for token in filter(None, (t.strip() for t in spec.split(","))):
        key, _, value = token.partition("=")
        if key == "threads" and value.isdigit():
            v.threads = int(value)
        elif key == "sample_batch" and value.isdigit():
            v.sample_batch = int(value)
        elif key == "batch" and value.isdigit():
            v.overrides.append(f"train.batch_size={value}")
        elif token in ("channels_last", "compile"):
            v.overrides.append(f"train.{token}=true")
        elif token == "cpu_bf16":
            v.cpu_bf16 = True
        elif token == "no_mkldnn":
            v.mkldnn = False
        elif token == "inference_mode":
            v.inference_mode = True
        elif token == "foreach":
            v.foreach = True
        else:
            raise SystemExit(f"--compare {spec!r}: unknown setting {token!r}; use {VARIANT_HELP}.")
    return v


@contextlib.contextmanager
def variant_settings(v: Variant):
    """Threads, mkldnn and autocast of a variant for the duration of its timed block, restored afterwards."""
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    if v.threads:
        torch.set_num_threads(v.threads)
    torch.backends.mkldnn.enabled = v.mkldnn
    try:
        with cpu_autocast(v.cpu_bf16):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn


def use_foreach(trainer: Trainer) -> None:
    """Swap in AdamW(foreach=True) and a foreach EMA update: one kernel launch per op for all parameters."""
    tc = trainer.cfg.train
    opt_cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    trainer.opt = opt_cls(trainer.net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
    ema = trainer.ema
    if ema is None:
        return

    @torch.no_grad()
    def update(net) -> None:
        d = min(ema.decay, (1 + ema.updates) / (10 + ema.updates))
        state = net.state_dict()
        floats = [k for k, v in state.items() if v.dtype.is_floating_point]
        torch._foreach_lerp_([ema.shadow[k] for k in floats], [state[k].float() for k in floats], 1.0 - d)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                ema.shadow[k].copy_(v)
        ema.updates += 1

    ema.update = update


def compare(name: str, specs: list[str], args: argparse.Namespace, tmp: Path) -> list[str]:
    """Time the recipe as it is and each variant in turn, round after round, so that load from other processes
    hits them all alike. Reports median images/s, the speed-up over the recipe as it is, the warm-up time
    (compilation included) and the mean loss over the timed steps -- every variant starts from the same
    seed, data order and noise, so a numerics change that hurts the loss shows there. `--steps 0` times
    sampling only."""
    variants = [parse_variant(s) for s in ["", *specs]]
    trainers = []
    for i, v in enumerate(variants):
        cfg = recipe_config(name, args, tmp)
        trainer = make_trainer(apply_overrides(cfg, v.overrides) if v.overrides else cfg, tmp / f"{name}-{i}")
        if v.foreach:
            use_foreach(trainer)
        trainers.append(trainer)
    train = compare_training(variants, trainers, args) if args.steps else None
    sample = None if args.no_sampling else compare_sampling(variants, trainers, args)
    return compare_table(name, variants, train, sample, args)


def compare_training(variants: list[Variant], trainers: list[Trainer], args: argparse.Namespace):
    """(warm-up seconds, images/s per round, losses) of each variant's training steps."""
    streams = [batch_stream(t) for t in trainers]
    warmup_s, ips, losses = [], [[] for _ in variants], [[] for _ in variants]
    for v, trainer, stream in zip(variants, trainers, streams):
        with variant_settings(v):  # with compile, this is where compilation happens
            t0 = time.perf_counter()
            for _ in range(args.warmup):
                trainer.train_step(*next(stream))
            warmup_s.append(time.perf_counter() - t0)
    for _ in range(args.repeats):
        for i, (v, trainer) in enumerate(zip(variants, trainers)):
            with variant_settings(v):
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    losses[i].append(trainer.train_step(*next(streams[i]))["loss"].item())
                ips[i].append(args.steps * trainer.cfg.train.batch_size / (time.perf_counter() - t0))
    return warmup_s, ips, losses


def compare_sampling(variants: list[Variant], trainers: list[Trainer], args: argparse.Namespace) -> list[list[float]]:
    """`Pipeline.sample` images/s of each variant, per round."""
    from mnist_diffusion.pipeline import Pipeline

    # A compiled variant samples through its compiled module (compiled anew for eval mode in the warm-up).
    pipes = [Pipeline(t.cfg, t.train_net if t.cfg.train.compile else t.net, t.device) for t in trainers]
    for v, t, pipe in zip(variants, trainers, pipes):
        t.net.eval()
        with variant_settings(v):
            sampling_warmup(pipe, args)
    ips: list[list[float]] = [[] for _ in variants]
    for _ in range(args.sample_repeats):
        for i, (v, pipe) in enumerate(zip(variants, pipes)):
            grad_mode = torch.inference_mode() if v.inference_mode else contextlib.nullcontext()
            with variant_settings(v), grad_mode:
                t0 = time.perf_counter()
                pipe.sample(args.sample_n, batch_size=v.sample_batch or args.sample_batch)
                ips[i].append(args.sample_n / (time.perf_counter() - t0))
    return ips


def compare_table(name, variants, train, sample, args) -> list[str]:
    lines = [
        f"| {name}: variant | train img/s | speed-up | warm-up s ({args.warmup} steps) | mean loss "
        f"| sample img/s ({args.sample_n} images) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, v in enumerate(variants):
        row = f"| {v.spec} "
        if train:
            warmup_s, ips, losses = train
            row += (f"| {med(ips[i]):.1f} | {med(ips[i]) / med(ips[0]):.2f}x | {warmup_s[i]:.1f} "
                    f"| {statistics.fmean(losses[i]):.4f} ")
        else:
            row += "| - | - | - | - "
        row += f"| {med(sample[i]):.2f} | {med(sample[i]) / med(sample[0]):.2f}x |" if sample else "| - | - |"
        lines.append(row)
    lines.append("")
    for label, per_round in (("train", train[1] if train else None), ("sample", sample)):
        if per_round:
            lines.append(f"Per round ({label} img/s): " + "; ".join(
                f"{v.spec}: {', '.join(f'{x:.2f}' for x in per_round[i])}" for i, v in enumerate(variants)))
    return lines


def measure_recipe(name: str, args: argparse.Namespace, tmp: Path) -> Result:
    res = Result(name)
    try:
        cfg = recipe_config(name, args, tmp)
        t0 = time.perf_counter()
        trainer = make_trainer(cfg, tmp / name)
        res.setup_s = time.perf_counter() - t0
    except Exception as e:  # a benchmark reports and goes on; the message says which recipe and why
        res.skipped = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return res
    res.params = sum(p.numel() for p in trainer.net.parameters())
    res.batch_size = trainer.cfg.train.batch_size
    if args.profile:
        print(f"\n## torch.profiler, {name}, {args.profile} train steps, {torch.get_num_threads()} threads\n")
        print(profile_training(trainer, args.profile), flush=True)
    try:
        measure_training(trainer, res, args)
    except Exception as e:
        res.skipped = f"training failed: {type(e).__name__}: {e}"
        return res
    if not args.no_sampling:
        try:
            measure_sampling(trainer, res, args)
        except Exception as e:
            res.sample_note = f"sampling failed: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return res


# ---- reporting ----------------------------------------------------------------------------------------------
def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(results: list[Result], peak: float) -> list[str]:
    lines = [
        "| recipe | params | batch | train img/s | fwd+bwd MFLOP/img | train GFLOP/s | % of fp32 peak "
        "| sampler | sample img/s | MFLOP/img | sample GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.recipe} | skipped: {r.skipped} |||||||||||")
            continue
        ips = med(r.train_ips)
        g = ips * r.train_flops / 1e9
        row = (f"| {r.recipe} | {r.params:,} | {r.batch_size} | {ips:.0f} | {r.train_flops / 1e6:.1f} | {g:.1f} "
               f"| {100 * g / peak:.0f}% ")
        if r.sample_ips:
            s = med(r.sample_ips)
            sg = s * r.sample_flops / 1e9
            row += (f"| {r.sampler} | {s:.1f} | {r.sample_flops / 1e6:.0f} | {sg:.1f} | {100 * sg / peak:.0f}% |")
        else:
            row += f"| {r.sample_note or '-'} |  |  |  |  |"
        lines.append(row)
    return lines


def details(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.skipped:
            continue
        out.append(
            f"- {r.recipe}: set-up {r.setup_s:.1f} s, warm-up {r.warmup_s:.1f} s, train img/s per repeat "
            f"{', '.join(f'{v:.0f}' for v in r.train_ips)}, mean loss over timed steps {r.loss:.4f}"
            + (f"; sample img/s per repeat {', '.join(f'{v:.1f}' for v in r.sample_ips)}" if r.sample_ips else "")
            + (f"; {r.sample_note}" if r.sample_note and not r.sample_ips else "")
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few steps, one repeat, small sampling batch")
    ap.add_argument("--recipes", nargs="+", default=None,
                    help=f"recipes to run (default: all of {', '.join(ORDER)}; with --compare: ddpm-cond)")
    ap.add_argument("--steps", type=int, default=None, help="timed train steps per repeat (default 10; quick 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed train steps first (default 2; quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats, the median is reported (default 3; quick 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: the recipe's)")
    ap.add_argument("--sample-n", type=int, default=None,
                    help="images per timed Pipeline.sample (default 256; quick 32)")
    ap.add_argument("--sample-repeats", type=int, default=1, help="timed Pipeline.sample calls, median reported")
    ap.add_argument("--sample-batch", type=int, default=64, help="Pipeline.sample batch size (its CPU default is 64)")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's, = cores)")
    ap.add_argument("--interop-threads", type=int, default=None, help="inter-op threads (default: torch's)")
    ap.add_argument("--matmul-n", type=int, default=None, help="fp32 peak matrix size (default 2048; quick 1024)")
    ap.add_argument("--bf16-n", type=int, default=512, help="matrix size of the bf16-vs-fp32 comparison")
    ap.add_argument("--data-limit", type=int, default=4096, help="training images loaded per recipe")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="config override applied to every recipe, e.g. train.channels_last=true")
    ap.add_argument("--cpu-bf16", action="store_true", help="run training and sampling under CPU bf16 autocast")
    ap.add_argument("--inference-mode", action="store_true", help="sample under torch.inference_mode()")
    ap.add_argument("--no-sampling", action="store_true")
    ap.add_argument("--compare", action="append", default=[], metavar="SETTINGS", help=VARIANT_HELP)
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS", help="print a torch.profiler table first")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.md")
    args = ap.parse_args(argv)
    quick = args.quick
    for name, full, small in (("steps", 10, 3), ("warmup", 2, 1), ("repeats", 3, 1), ("sample_n", 256, 32),
                              ("matmul_n", 2048, 1024)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.sample_batch = min(args.sample_batch, args.sample_n) if quick else args.sample_batch
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.interop_threads:
        torch.set_num_interop_threads(args.interop_threads)  # must come before any parallel work
    if args.threads:
        torch.set_num_threads(args.threads)
    env = " ".join(f"{k}={v} " for k, v in ENV_AT_START.items())
    command = f"{env}python benchmarks/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine_info()
    print(f"Machine: {info}", flush=True)

    if args.compare:  # A/B mode: no peak, no results file; one table per recipe
        names = args.recipes or ["ddpm-cond"]
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                table_lines = compare(name, args.compare, args, Path(tmp))
                print("\n".join(["", f"Command: `{command}`", f"Machine: {info}", "", *table_lines]), flush=True)
        return

    load_before = os.getloadavg()[0]
    peak_start = matmul_gflops(args.matmul_n)
    fp32_small = matmul_gflops(args.bf16_n)
    bf16_small = matmul_gflops(args.bf16_n, torch.bfloat16, repeats=3, max_seconds=10)
    verdict = "faster" if bf16_small > fp32_small else "slower"
    print(f"fp32 matmul: {peak_start:.1f} GFLOP/s; bf16 vs fp32 at {args.bf16_n}: {bf16_small:.2f} vs "
          f"{fp32_small:.1f} GFLOP/s", flush=True)

    names = args.recipes or [n for n in ORDER if n in RECIPES] + [n for n in RECIPES if n not in ORDER]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if name not in RECIPES:
                results.append(Result(name, skipped=f"no recipe {name!r} in recipes.RECIPES"))
            else:
                results.append(measure_recipe(name, args, Path(tmp)))
            r = results[-1]
            print(f"{name}: " + (f"skipped -- {r.skipped}" if r.skipped else
                                 f"train {med(r.train_ips):.0f} img/s, sample {med(r.sample_ips):.1f} img/s"
                                 + (f" ({r.sample_note})" if r.sample_note else "")), flush=True)

    # Other processes can only slow a measurement down, so the better of the two peak measurements is the
    # reference; a share above 100% means the machine was busier during the peak than during the recipe.
    peak_end = matmul_gflops(args.matmul_n)
    peak = max(peak_start, peak_end)
    load_after = os.getloadavg()[0]
    peak_lines = [
        f"fp32 matmul peak: {peak:.1f} GFLOP/s (torch.mm {args.matmul_n}x{args.matmul_n}, "
        f"{torch.get_num_threads()} threads, median of repeats; {peak_start:.1f} at the start, {peak_end:.1f} at the "
        "end, the higher is the reference)",
        f"bf16 vs fp32 matmul at {args.bf16_n}x{args.bf16_n}: {bf16_small:.2f} vs {fp32_small:.1f} GFLOP/s "
        f"-- bf16 is {verdict} on this CPU ({torch.backends.cpu.get_cpu_capability()})",
        f"1-minute load average: {load_before:.1f} at the start, {load_after:.1f} at the end "
        f"({os.cpu_count()} cores; anything near or above the core count means the numbers are shared-machine "
        "numbers)",
    ]
    settings = (f"{args.steps} timed steps x {args.repeats} repeats after {args.warmup} warm-up steps; sampling "
                f"{args.sample_n} images in batches of {min(args.sample_batch, args.sample_n)}, "
                f"{args.sample_repeats} time(s); "
                f"intra-op threads {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}"
                + (f"; overrides {' '.join(args.set)}" if args.set else "")
                + ("; CPU bf16 autocast" if args.cpu_bf16 else "")
                + ("; sampling under inference_mode" if args.inference_mode else "")
                + (f"; OMP_WAIT_POLICY={ENV_AT_START['OMP_WAIT_POLICY']}" if "OMP_WAIT_POLICY" in ENV_AT_START
                   else ""))
    lines = [
        "# Training and sampling throughput vs the machine's matmul peak",
        "",
        f"Command: `{command}`" + ("  (smoke run: too few steps for trustworthy numbers)" if args.quick else ""),
        f"Machine: {info}",
        f"Settings: {settings}",
        "",
        *(f"- {line}" for line in peak_lines),
        "",
        *table(results, peak),
        "",
        *details(results),
        "",
        "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode: convolutions, matmuls and attention "
        "(forward and backward), not elementwise work (GroupNorm, SiLU, adds, AdamW, EMA), so GFLOP/s are lower "
        "bounds. Training images/s are through `Trainer.train_step` on the package's own batches (AdamW, grad "
        "clipping and the EMA update included); sampling is `Pipeline.sample` with the recipe's default sampler, "
        "steps and guidance (guidance runs the conditional and unconditional pass as one doubled batch), on "
        "freshly initialised weights. The latent recipe's train FLOPs include the frozen encoder's forward; its "
        "sampling FLOPs include decoding.",
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
