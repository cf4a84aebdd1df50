"""How idle OpenMP threads wait between parallel loops, chosen once, before torch loads (OpenMP reads it then).

Spinning briefly (libgomp's default) keeps threads ready for the next small kernel, and a quiet machine samples
fastest that way: on a 2-core AMX Xeon, `ddpm-cond` in bf16 under torch.compile drew 32 images/s spinning and
14 with sleeping threads. On cores shared with other work, spinning threads steal the time the busy ones need:
the same sampler drew 8 images/s spinning and 17 sleeping beside two busy threads, and a training step was up
to 22x slower (docs/performance.md). So: sleep (OMP_WAIT_POLICY=PASSIVE) when the 1-minute load average says
the cores are busy, else keep the default. A value the user exported wins. Numerics do not depend on it.
"""

from __future__ import annotations

import os
import sys

BUSY_LOAD_PER_CORE = 0.5  # 1-minute load average per usable core from which other work counts as sharing them


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_wait_policy(environ=os.environ, load: float | None | str = "measure", cores: int | None = None,
                       torch_loaded: bool | None = None) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE in `environ` if the cores are busy; say what and why. `load` (the 1-minute
    load average; "measure" reads it), `cores` and `torch_loaded` can be given for a test."""
    exported = {k: environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in environ}
    if exported:
        return "as exported: " + ", ".join(f"{k}={v}" for k, v in exported.items())
    if "torch" in sys.modules if torch_loaded is None else torch_loaded:
        return "OpenMP's default (torch was imported before mnist_diffusion, so it started unchanged)"
    if load == "measure":
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = None
    cores = cores or usable_cores()
    if load is None or load >= BUSY_LOAD_PER_CORE * cores:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
        seen = "unknown" if load is None else f"{load:.1f}"
        return f"passive (threads sleep): load average {seen} on {cores} cores"
    return f"default (threads spin briefly): load average {load:.1f} on {cores} cores, a quiet machine"


WAIT_POLICY = choose_wait_policy()
