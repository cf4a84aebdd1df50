"""What the processor is and what it runs fast: the one reader of /proc/cpuinfo for the package and the benchmarks,
its bf16 matrix units, and the cached probe that times a bf16 convolution against an fp32 one.

`precision.resolve_precision` decides from these; nothing here chooses. Nothing here draws from torch's global
random generator either: the probe's tensors come from a generator of its own, so measuring it (on a machine's
first run) leaves a seeded run's randomness as it would be without it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mnist_diffusion.files import atomic_write_text

PROBE_FILE = "precision-probe.json"
PROBE_VERSION = 2  # part of the cache key: v1 timed a matmul with one warm-up, too few for AMX to reach speed
PROBE_SIZE = 512  # (n, n) matrices for `matmul_gflops`
PROBE_CONV = (16, 64, 28)  # batch, channels, side of the probe's 3x3 conv: a 28x28 level of a U-Net


# ---- /proc/cpuinfo ----------------------------------------------------------------------------------------------
@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's `key: value` lines of /proc/cpuinfo, keys lower-cased; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break  # the first processor's block is enough: the others repeat it
            continue
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip().lower(), value.strip())
    return info


def cpu_model() -> str:
    """The processor's name, e.g. 'AMD EPYC 9R14 96-Core Processor'."""
    info = _cpuinfo()
    return info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags ('flags' on x86, 'Features' on Arm); empty where /proc/cpuinfo is missing."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("features") or "").split())


# ---- bf16 matrix units ------------------------------------------------------------------------------------------
def _torch_cpu_check(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private helpers of torch.cpu (torch >= 2.2); absent -> unknown
    try:
        return bool(check()) if check is not None else False
    except Exception:
        return False


def bf16_units(flags: set[str] | frozenset[str] | None = None, capability: str | None = None) -> tuple[bool, str]:
    """(whether this CPU has bf16 matrix units, what was found), from torch's checks and the cpuinfo flags:
    AMX-BF16 or AVX-512-BF16 on x86, the BF16 extension on Arm.

    flags / capability: for tests; default the running machine's `cpu_flags()` and
    `torch.backends.cpu.get_cpu_capability()` (e.g. 'AVX2', 'AVX512').
    """
    mocked = flags is not None or capability is not None
    flags = cpu_flags() if flags is None else frozenset(flags)
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    found = []
    if (
        "amx_bf16" in flags
        or "AMX" in capability.upper()
        or (not mocked and _torch_cpu_check("_is_amx_tile_supported"))
    ):
        found.append("AMX-BF16")
    if (
        "avx512_bf16" in flags
        or "AVX512_BF16" in capability.upper()
        or (not mocked and _torch_cpu_check("_is_avx512_bf16_supported"))
    ):
        found.append("AVX-512-BF16")
    if "bf16" in flags and platform.machine().lower() in ("aarch64", "arm64"):
        found.append("Arm BF16")
    if found:
        return True, f"{' and '.join(found)} (torch CPU capability {capability})"
    return False, f"no AMX-BF16 or AVX-512-BF16 units (torch CPU capability {capability})"


# ---- the probe ---------------------------------------------------------------------------------------------------
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


def matmul_gflops(
    dtype: torch.dtype, n: int = PROBE_SIZE, repeats: int = 5, max_seconds: float = 2.0, summary=min, warmup: int = 3
) -> float:
    """GFLOP/s of `torch.mm` on two (n, n) matrices of `dtype` (2 n^3 FLOPs each) at the `summary` (best, by
    default) of up to `repeats` timed products after `warmup` untimed ones, within about `max_seconds`."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dtype) for _ in range(2))
    out = torch.mm(a, b)
    return _gflops(lambda: torch.mm(a, b, out=out), 2 * n**3, repeats, max_seconds, warmup, summary)


@torch.inference_mode()
def conv_gflops(
    dtype: torch.dtype,
    shape: tuple[int, int, int] = PROBE_CONV,
    repeats: int = 5,
    max_seconds: float = 2.0,
    summary=min,
    warmup: int = 3,
) -> float:
    """GFLOP/s of a 3x3 conv (C -> C, padding 1, with bias) on a channels_last (B, C, S, S) map of `dtype`, where
    `shape` = (B, C, S): 2 * B * S^2 * C^2 * 9 FLOPs a call, timed as `matmul_gflops` times its products.

    Input, weights and bias are drawn from a generator of its own (not torch's global one, which a seeded run
    has just set), at the scale of nn.Conv2d's initialisation."""
    b, c, side = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, side, side, generator=g).to(dtype).to(memory_format=torch.channels_last)
    bound = (c * 9) ** -0.5
    weight = ((torch.rand(c, c, 3, 3, generator=g) * 2 - 1) * bound).to(dtype)
    weight = weight.contiguous(memory_format=torch.channels_last)
    bias = ((torch.rand(c, generator=g) * 2 - 1) * bound).to(dtype)
    return _gflops(
        lambda: F.conv2d(x, weight, bias, padding=1),
        2 * b * side * side * c * c * 9,
        repeats,
        max_seconds,
        warmup,
        summary,
    )


def _probe_key() -> str:
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | probe v{PROBE_VERSION}"


def probe_bf16_speedup(path: Path) -> tuple[float, float]:
    """(fp32, bf16) GFLOP/s of the probe convolution (`conv_gflops`) on this machine, measured once and cached in
    the JSON file `path` (the package uses its cache directory's `PROBE_FILE`), keyed by processor, torch version,
    thread count and `PROBE_VERSION`."""
    key = _probe_key()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    entry = known.get(key)
    if (
        isinstance(entry, dict)
        and isinstance(entry.get("fp32"), (int, float))
        and isinstance(entry.get("bf16"), (int, float))
    ):
        return float(entry["fp32"]), float(entry["bf16"])
    fp32, bf16 = conv_gflops(torch.float32), conv_gflops(torch.bfloat16)
    known[key] = {"fp32": round(fp32, 2), "bf16": round(bf16, 2), "conv": list(PROBE_CONV)}
    with contextlib.suppress(OSError):  # an unwritable cache only costs the measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(known, indent=1) + "\n")
    return fp32, bf16
