"""One line describing the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The bf16-relevant ISA flags in /proc/cpuinfo (amx_bf16, avx512_bf16), or "no bf16 units"."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "flags unknown"
    found = sorted(flags & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f"})
    return " ".join(found) if found else "no AVX-512/AMX"


def machine_info() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    openmp = ", ".join(f"{k}={os.environ[k]}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ)
    return (f"{cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {torch.backends.cpu.get_cpu_capability()}{gpu}"
            + (f"; {openmp}" if openmp else ""))
