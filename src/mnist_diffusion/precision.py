"""Which numerics a run uses -- fp32 or bf16 -- and why; the bf16 autocast of training and bf16 sampling nets.

`resolve_precision("auto" | "fp32" | "bf16", device, purpose)` returns a `PrecisionChoice`: the numerics and a
one-line reason, which runs record in metrics.jsonl and benchmarks print. What `auto` picks:

- CUDA: bf16 autocast for training where the GPU supports bf16 (measured there: benchmarks/results/
  cuda_throughput.md); sampling stays fp32, which is what was measured on the GPU.
- CPU: bf16 only where the processor has bf16 matrix units -- AMX-BF16 or AVX-512-BF16 (x86, from torch's
  CPU checks and /proc/cpuinfo) or the Arm BF16 extension -- AND a one-off measurement of the U-Net's typical
  layer (a 3x3 convolution on a channels_last 28x28 map, `conv_gflops`) confirms bf16 runs it at least
  `BF16_MIN_SPEEDUP` times as fast as fp32 (cached per processor, torch version and thread count in the user
  cache directory, `precision-probe.json`). Elsewhere (AVX2-only CPUs, where bf16 is an order of magnitude
  slower) fp32.
- MPS and anything else: fp32.

Training in bf16 is autocast: fp32 master weights, optimizer state and loss, matrix products in bf16.
Sampling in bf16 casts the network's weights to bf16 and its input x_t to bf16 at its boundary, and casts
its output back to fp32 (`run_network_in`), so the noise schedule, the guidance combination, the sampler's
state updates and the final image stay fp32. A latent model's autoencoder decodes in bf16 as well, returning fp32.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mnist_diffusion.data.cache import cache_dir
from mnist_diffusion.errors import UserError
from mnist_diffusion.files import atomic_write_text

Purpose = Literal["train", "sample"]
# A bf16 3x3 conv this many times faster than fp32. The whole U-Net gains less than its convolutions (its
# GroupNorm, SiLU and adds speed up less), so this is a floor below which bf16 sampling would not pay: on an
# AMX Xeon the probe measured ~3x and sampling 1.3-2x; on an AVX-512-BF16 EPYC without AMX 1.8-2.0x and sampling
# 1.2-1.7x (benchmarks/results/precision_epyc_avx512bf16.md); on AVX2 the probe is ~0.1x.
BF16_MIN_SPEEDUP = 1.5
PROBE_FILE = "precision-probe.json"
PROBE_VERSION = 2  # part of the cache key: v1 timed a matmul with one warm-up, too few for AMX (it read 2x, not 5x)
PROBE_SIZE = 512  # (n, n) matrices for `matmul_gflops`
PROBE_CONV = (16, 64, 28)  # batch, channels, side of the probe's 3x3 conv: a 28x28 level of a U-Net


@dataclass(frozen=True)
class PrecisionChoice:
    """The numerics a run uses: precision 'fp32' | 'bf16', and why (one sentence fragment, for logs)."""

    precision: Literal["fp32", "bf16"]
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def __str__(self) -> str:
        return f"{self.precision} ({self.reason})"


def _cpuinfo_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo ('flags' on x86, 'Features' on Arm); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def _torch_cpu_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private helpers of torch.cpu (torch >= 2.2); absent -> unknown
    try:
        return bool(check()) if check is not None else False
    except Exception:  # noqa: BLE001 - a failing probe only means "not known to be there"
        return False


def cpu_bf16_units(flags: set[str] | None = None, capability: str | None = None) -> tuple[bool, str]:
    """(whether this CPU has bf16 matrix units, what was found), from torch's checks and the cpuinfo flags.

    flags / capability: for tests; default the running machine's /proc/cpuinfo flags and
    `torch.backends.cpu.get_cpu_capability()` (e.g. 'AVX2', 'AVX512').
    """
    mocked = flags is not None or capability is not None
    flags = _cpuinfo_flags() if flags is None else set(flags)
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    found = []
    if ("amx_bf16" in flags or "AMX" in capability.upper()
            or (not mocked and _torch_cpu_check("_is_amx_tile_supported"))):
        found.append("AMX-BF16")
    if ("avx512_bf16" in flags or "AVX512_BF16" in capability.upper()
            or (not mocked and _torch_cpu_check("_is_avx512_bf16_supported"))):
        found.append("AVX-512-BF16")
    if "bf16" in flags and platform.machine().lower() in ("aarch64", "arm64"):
        found.append("Arm BF16")
    if found:
        return True, f"{' and '.join(found)} (torch CPU capability {capability})"
    return False, f"no AMX-BF16 or AVX-512-BF16 units (torch CPU capability {capability})"


def _gflops(run, flops: float, repeats: int, max_seconds: float, warmup: int, summary) -> float:
    """flops / the `summary` of up to `repeats` timed calls of `run`, after `warmup` untimed ones (AMX and
    oneDNN set up tiles and kernels in the first calls); timing stops early once `max_seconds` are spent."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return flops / summary(times) / 1e9


def matmul_gflops(dtype: torch.dtype, n: int = PROBE_SIZE, repeats: int = 5, max_seconds: float = 2.0,
                  summary=min, warmup: int = 3) -> float:
    """GFLOP/s of `torch.mm` on two (n, n) matrices of `dtype` (2 n^3 FLOPs each) at the `summary` (best, by
    default) of up to `repeats` timed products after `warmup` untimed ones, within about `max_seconds`."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    out = torch.mm(a, b)
    return _gflops(lambda: torch.mm(a, b, out=out), 2 * n**3, repeats, max_seconds, warmup, summary)


@torch.inference_mode()
def conv_gflops(dtype: torch.dtype, shape: tuple[int, int, int] = PROBE_CONV, repeats: int = 5,
                max_seconds: float = 2.0, summary=min, warmup: int = 3) -> float:
    """GFLOP/s of a 3x3 conv (C -> C, padding 1) on a channels_last (B, C, S, S) map of `dtype`, where
    `shape` = (B, C, S): 2 * B * S^2 * C^2 * 9 FLOPs a call, timed as `matmul_gflops` times its products."""
    b, c, side = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, side, side, generator=g).to(dtype).to(memory_format=torch.channels_last)
    conv = nn.Conv2d(c, c, 3, padding=1).to(dtype).to(memory_format=torch.channels_last)
    return _gflops(lambda: conv(x), 2 * b * side * side * c * c * 9, repeats, max_seconds, warmup, summary)


def _probe_key() -> str:
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"{model} | torch {torch.__version__} | {torch.get_num_threads()} threads | probe v{PROBE_VERSION}"


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def probe_bf16_speedup(cache: Path | None = None) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s of the probe convolution (`conv_gflops`) on this machine, measured once and cached in
    `cache` (default the user cache directory's precision-probe.json, keyed by processor, torch version, thread
    count and `PROBE_VERSION`)."""
    path = cache if cache is not None else cache_dir() / PROBE_FILE
    key = _probe_key()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("fp32"), (int, float)) and isinstance(entry.get("bf16"),
                                                                                             (int, float)):
        return float(entry["fp32"]), float(entry["bf16"])
    fp32, bf16 = conv_gflops(torch.float32), conv_gflops(torch.bfloat16)
    known[key] = {"fp32": round(fp32, 2), "bf16": round(bf16, 2), "conv": list(PROBE_CONV)}
    with contextlib.suppress(OSError):  # an unwritable cache only costs the measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, indent=1) + "\n")
    return fp32, bf16


def _cpu_auto() -> PrecisionChoice:
    units, found = cpu_bf16_units()
    if not units:
        return PrecisionChoice("fp32", f"auto: this CPU has {found}, where bf16 is slower than fp32")
    fp32, bf16 = probe_bf16_speedup()
    measured = f"a bf16 3x3 conv runs {bf16:.0f} vs fp32 {fp32:.0f} GFLOP/s ({bf16 / fp32:.1f}x)"
    if bf16 >= BF16_MIN_SPEEDUP * fp32:
        return PrecisionChoice("bf16", f"auto: this CPU has {found}; {measured}")
    return PrecisionChoice("fp32", f"auto: this CPU has {found}, but {measured}, under {BF16_MIN_SPEEDUP:g}x")


@functools.cache
def _resolve(requested: str, device_type: str, purpose: str, bf16_on_cuda: bool) -> PrecisionChoice:
    if requested not in ("auto", "fp32", "bf16"):
        raise UserError(f"Unknown precision {requested!r}; choose auto, fp32 or bf16.")
    if requested == "fp32":
        return PrecisionChoice("fp32", "asked for")
    if device_type == "cuda":
        if not bf16_on_cuda:
            if requested == "bf16":
                raise UserError("--precision bf16 was asked for, but this GPU does not support bf16; use fp32 or auto.")
            return PrecisionChoice("fp32", "auto: this GPU does not support bf16")
        if requested == "bf16":
            return PrecisionChoice("bf16", "asked for")
        if purpose == "train":
            return PrecisionChoice("bf16", "auto: bf16 autocast on CUDA")
        return PrecisionChoice("fp32", "auto: sampling on CUDA stays fp32 (bf16 not measured there yet)")
    if device_type == "cpu":
        if requested == "bf16":
            units, found = cpu_bf16_units()
            return PrecisionChoice("bf16", "asked for" + ("" if units else f"; this CPU has {found}, so bf16 runs "
                                                                            "several times slower than fp32"))
        return _cpu_auto()
    if requested == "bf16":
        raise UserError(f"--precision bf16 runs on the CPU and CUDA, not on {device_type}; use fp32 or auto.")
    return PrecisionChoice("fp32", f"auto: {device_type} runs fp32")


def resolve_precision(requested: str | PrecisionChoice, device: str | torch.device,
                      purpose: Purpose = "sample") -> PrecisionChoice:
    """The numerics for `requested` ('auto' | 'fp32' | 'bf16') on `device`, for training or sampling.

    Decided once per process and argument set (the CPU probe once per machine); a bad value is a UserError.
    """
    if isinstance(requested, PrecisionChoice):
        return requested
    device = torch.device(device)
    bf16_on_cuda = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return _resolve(str(requested), device.type, purpose, bf16_on_cuda)


def autocast(device: torch.device, precision: str | PrecisionChoice):
    """The training step's context: bf16 autocast where `precision` resolves to bf16, else a no-op.

    Autocast keeps the weights, gradients and optimizer state in fp32 and runs convolutions and matrix
    products in bf16 (on the CPU and CUDA alike).
    """
    choice = resolve_precision(precision, device, "train")
    if choice.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_net_dtype(module: nn.Module, args: tuple):
    x, *rest = args
    return (x.to(module._precision_dtype), *rest)


def _to_fp32(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
    return out.float()


def run_network_in(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast a sampling network's floating-point weights to `dtype` (in place) and make it take and return fp32.

    Its first input (x_t, (B, C, H, W)) is cast to `dtype` on the way in and its output back to fp32 on the way
    out; the other inputs (timesteps, labels) pass as they are, so t stays fp32 (bf16 cannot hold 999 exactly).
    Parameter names are unchanged. fp32 (or calling it again) leaves the hooks in place once.
    """
    net.to(dtype)
    net._precision_dtype = dtype
    if dtype != torch.float32 and not getattr(net, "_precision_hooks", None):
        net._precision_hooks = (net.register_forward_pre_hook(_to_net_dtype), net.register_forward_hook(_to_fp32))
    return net
