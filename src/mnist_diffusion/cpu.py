"""What the processor is: the one reader of /proc/cpuinfo for the package and the benchmarks."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


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
