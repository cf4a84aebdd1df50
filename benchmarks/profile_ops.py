"""Where the time goes: torch.profiler's per-operator CPU time of a training step and a sampling call, in fp32,
bf16 and bf16 compiled, grouped into what bf16 speeds up (convolutions, matrix products) and what it does not
(normalisation, elementwise layers, casts, overhead).

A bf16 run can only be as much faster than fp32 as the share of its time that bf16 arithmetic speeds up allows:
this says which group holds the rest, on the processor at hand, so a speed floor that is not met points at the
operators to work on.

Workloads: `train` (the `ddpm-cond` recipe's own `train_step`, batch 128; bf16 = autocast with fp32 master
weights) and `sample MODEL` (one `Pipeline.sample` call of 64 digits at the packaged model's defaults). Each is
warmed up (which pays any compile), then profiled over --calls calls; figures are self CPU ms per call, summed
over both threads' work as the profiler attributes it to the calling operator, so they add up to about the wall
time of the calls. The profiler itself adds a few percent.

    python benchmarks/profile_ops.py                                   # every workload, every variant
    python benchmarks/profile_ops.py --workloads "sample ldm" --calls 2

Writes benchmarks/results/profile_ops.md (--out) with the command and the machine.
"""

# ruff: noqa: I001  (mnist_diffusion is imported before torch on purpose)
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import mnist_diffusion  # noqa: E402, F401  (before torch: it sets OpenMP's waiting, as under the CLI)

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402
from _report import header, write_table  # noqa: E402
from mnist_diffusion.pipeline import load  # noqa: E402
from precision import _trainer  # noqa: E402

VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16 compiled": ("bf16", True)}
WORKLOADS = ("train ddpm-cond", "sample ddpm-cond", "sample ldm")
SAMPLE_N = 64

# Operator name -> group. The first group whose test matches wins; anything unmatched is "other" (the
# dispatcher's and Python's own work: empty tensors, views, dynamo guards).
GROUPS = (
    ("convolution backward", lambda n: n == "aten::convolution_backward"),
    ("convolution", lambda n: "convolution" in n),
    ("matrix products, attention", lambda n: n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
     or "scaled_dot_product" in n or "_mkldnn_linear" in n),
    ("normalisation", lambda n: "group_norm" in n or "layer_norm" in n),
    ("casts and copies", lambda n: n in ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")),
    ("compiled kernels", lambda n: "CompiledFxGraph" in n),
    ("elementwise, reductions, resizing", lambda n: n.startswith("aten::") and any(k in n for k in (
        "silu", "gelu", "add", "sub", "mul", "div", "sqrt", "exp", "cos", "sin", "lerp", "sum", "mean", "norm",
        "where", "clamp", "cat", "upsample", "pow", "neg", "fill_", "zero_", "normal_", "rand", "maximum",
        "minimum", "abs", "sign", "all", "any", "index", "gather", "scatter", "repeat", "rsqrt", "foreach")),
    ),
)


UNFUSED = ("convolution backward", "convolution", "matrix products, attention")  # torch.compile leaves these


def short(op: str) -> str:
    """An operator's name for the text: a compiled graph's hash dropped."""
    return "compiled graph" if "CompiledFxGraph" in op else op


def group_of(name: str) -> str:
    for group, test in GROUPS:
        if test(name):
            return group
    return "other"


def workload(name: str, variant: str, tmp: Path):
    """A callable doing one call of `name` in `variant`, and the images it makes per call."""
    precision, compile = VARIANTS[variant]
    kind, model = name.split()
    if kind == "train":
        overrides = ("train.compile=true",) if compile else ()
        ns = SimpleNamespace(threads=None, data_limit=1024)
        cfg, trainer, batches = _trainer(model, precision, ns, tmp, overrides)
        return (lambda: trainer.train_step(*next(batches))), cfg.train.batch_size
    pipe = load(model, precision=precision, compile=compile)
    return (lambda: pipe.sample(SAMPLE_N, seed=1, batch_size=SAMPLE_N)), SAMPLE_N


def measure(call, calls: int, warmup: int) -> tuple[float, dict[str, float], list[tuple[str, float]]]:
    """Wall ms per call (unprofiled, median of `calls`), self CPU ms per call by group, and by operator."""
    for _ in range(warmup):
        call()
    walls = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        walls.append((time.perf_counter() - t0) * 1e3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    groups: dict[str, float] = defaultdict(float)
    ops = []
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / calls
        groups[group_of(event.key)] += ms
        ops.append((event.key, ms))
    ops.sort(key=lambda kv: -kv[1])
    return sorted(walls)[len(walls) // 2], dict(groups), ops


def onednn_kernels(call) -> dict[tuple[str, str, str], list]:
    """One call under oneDNN's verbose mode: (primitive, implementation, propagation) -> [calls, ms], from the
    execution lines oneDNN prints to the process's stdout (captured at the file-descriptor level). The
    implementation names the instruction set a kernel uses (`..._amx`, `avx512_core_bf16`, `avx2`...), which says
    whether the bf16 matrix units do the work; `reorder` rows are layout conversions around the kernels."""
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+") as captured:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(captured.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                call()
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        captured.seek(0)
        kernels: dict[tuple[str, str, str], list] = defaultdict(lambda: [0, 0.0])
        for line in captured:
            parts = line.rstrip("\n").split(",")
            if len(parts) > 8 and parts[2:5] == ["primitive", "exec", "cpu"]:
                entry = kernels[(parts[5], parts[6], parts[7])]
                entry[0] += 1
                entry[1] += float(parts[-1])
    return dict(kernels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--calls", type=int, default=3, help="profiled (and, before, timed) calls per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (the compile happens here)")
    ap.add_argument("--no-onednn", action="store_true", help="skip the oneDNN kernel table (one verbose call)")
    ap.add_argument("--top", type=int, default=8, help="operators listed per workload (of its last variant)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "profile_ops.md")
    args = ap.parse_args()
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference every ratio is taken against
    started = time.perf_counter()
    machine = machine_info()
    print(machine, flush=True)
    sections = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads:
            results, kernels = {}, {}
            for variant in args.variants:
                call, images = workload(name, variant, Path(tmp) / variant.replace(" ", "-"))
                results[variant] = measure(call, args.calls, args.warmup)
                kernels[variant] = {} if args.no_onednn else onednn_kernels(call)
                print(f"{name} {variant}: {results[variant][0]:.0f} ms per call", flush=True)
            sections.append(section(name, images, results, args.top))
            sections += [kernel_table(v, k, args.top) for v, k in kernels.items() if k]
    write_table(args.out, [
        *header("Where the time goes: operators by group, fp32 against bf16", started),
        "Self CPU ms per call from torch.profiler, median wall ms per call unprofiled; `/ fp32` is fp32's ms "
        "over the variant's (above 1: faster). `train ddpm-cond`: one training step, batch 128, bf16 = autocast; "
        f"`sample MODEL`: one `Pipeline.sample` call of {SAMPLE_N} digits at the model's defaults.", "",
        *sections,
    ])


def section(name: str, images: int, results: dict, top: int) -> str:
    variants = list(results)
    names = [g for g, _ in GROUPS] + ["other"]
    head = "| group | " + " | ".join(f"{v} ms | / fp32" if v != "fp32" else "fp32 ms" for v in variants) + " |"
    lines = [f"## {name} ({images} images a call)", "", head,
             "|---|" + "|".join("---|---" if v != "fp32" else "---" for v in variants) + "|"]

    def row(label: str, values: dict[str, float], fused: bool) -> str:
        cells = []
        for v in variants:
            ms = values[v]
            # A compiled variant's fused kernels hold the normalisation and elementwise work of the others, so
            # its ratio is shown only for what it leaves to torch's own kernels.
            comparable = ms > 0.05 and values["fp32"] > 0.05 and not (fused and VARIANTS[v][1])
            cells.append(f"{ms:.1f}" if v == "fp32" else f"{ms:.1f} | " + (
                f"{values['fp32'] / ms:.2f}x" if comparable else "-"))
        return f"| {label} | " + " | ".join(cells) + " |"

    for g in names:
        values = {v: results[v][1].get(g, 0.0) for v in variants}
        if any(ms > 0.05 for ms in values.values()):
            lines.append(row(g, values, fused=g not in UNFUSED))
    lines.append(row("**profiled total**", {v: sum(results[v][1].values()) for v in variants}, fused=False))
    lines.append(row("**wall, unprofiled**", {v: results[v][0] for v in variants}, fused=False))
    last = variants[-1]
    lines += ["", f"Top operators in {last} (self ms per call): " + ", ".join(
        f"`{short(op)}` {ms:.1f}" for op, ms in results[last][2][:top]) + ".", ""]
    return "\n".join(lines)


def kernel_table(variant: str, kernels: dict, top: int) -> str:
    total = sum(ms for _, ms in kernels.values())
    reorder = sum(ms for (prim, _, _), (_, ms) in kernels.items() if prim == "reorder")
    lines = [f"oneDNN in {variant}, one call: {total:.1f} ms in its kernels, {reorder:.1f} of them in layout "
             f"reorders; the {top} costliest:", "",
             "| primitive | implementation | propagation | calls | ms |", "|---|---|---|---|---|"]
    for (prim, impl, prop), (count, ms) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"| {prim} | `{impl}` | {prop} | {count} | {ms:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
