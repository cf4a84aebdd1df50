"""One line describing the machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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


def cpus() -> str:
    """"2 cores", or "2 logical CPUs (2 per core)" where they share cores (SMT): two threads on one core share
    its matrix and vector units, which caps what the second can add."""
    n = os.cpu_count()
    try:
        siblings = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text().strip()
        ranges = [part.split("-") for part in siblings.split(",")]
        per_core = sum(int(r[-1]) - int(r[0]) + 1 for r in ranges)
    except (OSError, ValueError):
        return f"{n} CPUs"
    return f"{n} cores" if per_core == 1 else f"{n} logical CPUs ({per_core} per core)"


def machine_info() -> str:
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    # Environment that changes the figures: OpenMP's waiting, and the instruction sets torch and oneDNN may use.
    names = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
    openmp = ", ".join(f"{k}={os.environ[k]}" for k in names if k in os.environ)
    return (f"{cpu_model()} ({cpu_flags()}), {cpus()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {torch.backends.cpu.get_cpu_capability()}{gpu}"
            + (f"; {openmp}" if openmp else ""))
