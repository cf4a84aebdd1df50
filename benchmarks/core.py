"""The runner's parts: the case registry and its parameters, the timing harness, the machine record and the
results files (one JSON line per measured variant, `results/<suite>.jsonl`)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
results_dir = RESULTS  # where the running cases' records go (`--results`); a case may read earlier ones there
SUITES = ("sampling", "training", "quality", "precision", "serve", "peers", "gpu")
# Environment that changes which kernels run or how OpenMP threads wait: recorded with every result.
ENV_KEYS = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "MKL_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "DNNL_MAX_CPU_ISA",
)
ISA_FLAGS = ("amx_bf16", "amx_tile", "amx_fp16", "avx512_bf16", "avx512_fp16", "avx512f", "avx2", "bf16")


class BenchError(Exception):
    """Bad input to the runner: one sentence for the user, exit code 2."""


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Param:
    """A case parameter: its default, its value under --quick, the values it accepts. A tuple default makes a
    list parameter, written `a,b,c` on the command line; the case records each item as its own variant."""

    default: Any
    quick: Any = None
    choices: tuple | None = None
    help: str = ""

    def parse(self, name: str, text: str) -> Any:
        if isinstance(self.default, tuple):
            kind = type(self.default[0]) if self.default else str
            return tuple(self._one(name, item.strip(), kind) for item in text.split(",") if item.strip())
        return self._one(name, text, type(self.default))

    def _one(self, name: str, text: str, kind: type) -> Any:
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = text.lower() in ("true", "1", "yes")
            elif text.lower() == "none" and self.default is None:
                value = None
            else:
                value = kind(text) if self.default is not None else text
        except ValueError:
            raise BenchError(
                f"--set {name}={text}: {name} takes {kind.__name__} values, e.g. {name}="
                f"{self.default[0] if isinstance(self.default, tuple) else self.default}."
            ) from None
        if self.choices and value not in self.choices:
            raise BenchError(f"--set {name}={text}: {name} is one of {', '.join(map(str, self.choices))}.")
        return value


@dataclass
class Case:
    suite: str
    name: str
    fn: Callable[..., Iterable[tuple[dict, dict]]]
    params: dict[str, Param]
    doc: str = ""

    @property
    def full(self) -> str:
        return f"{self.suite}.{self.name}"

    def resolve(self, sets: list[str], quick: bool) -> dict[str, Any]:
        """The parameter values: defaults (or the quick values), then each KEY=VALUE of `sets`."""
        values = {k: p.quick if quick and p.quick is not None else p.default for k, p in self.params.items()}
        for item in sets:
            key, sep, text = item.partition("=")
            if not sep:
                raise BenchError(f"--set {item!r}: write KEY=VALUE, e.g. --set n=64.")
            if key not in self.params:
                known = ", ".join(self.params) or "none"
                raise BenchError(f"--set {key}: {self.full} has no parameter {key!r}; its parameters: {known}.")
            values[key] = self.params[key].parse(key, text)
        return values


REGISTRY: dict[str, Case] = {}


def case(full_name: str, **params: Param):
    """Register the decorated function as case `suite.name` with these parameters. The function takes the
    resolved values as keyword arguments and yields (variant, metrics) pairs: each becomes one record whose
    params are the case's values updated by the variant (what varied within the run: model, numerics...)."""
    suite, _, name = full_name.partition(".")

    def register(fn):
        first = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        REGISTRY[full_name] = Case(suite, name, fn, params, first.split(": ")[0].split("; ")[0])
        return fn

    return register


def load_suites(names: Iterable[str] = SUITES) -> dict[str, Case]:
    import importlib

    for name in names:
        importlib.import_module(f"benchmarks.{name}")
    return REGISTRY


def select(target: str) -> list[Case]:
    suite, _, name = target.partition(".")
    if suite not in SUITES:
        raise BenchError(f"There is no suite {suite!r}; suites: {', '.join(SUITES)}.")
    load_suites([suite])
    cases = [c for c in REGISTRY.values() if c.suite == suite and (not name or c.name == name)]
    if not cases:
        names = ", ".join(c.name for c in REGISTRY.values() if c.suite == suite)
        raise BenchError(f"Suite {suite} has no case {name!r}; its cases: {names}.")
    return cases


# ---------------------------------------------------------------------------------------------- timing
def sync_cuda() -> None:
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.synchronize()


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (a CUDA device synchronised before and after)."""
    sync_cuda()
    t0 = time.perf_counter()
    fn()
    sync_cuda()
    return time.perf_counter() - t0


def alternate(
    fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1, log: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each contender, after `warmup` untimed calls each: the contenders in turn, round after
    round, the order reversed every other round, so a busy neighbour or a warming cache slows all alike."""
    warm = {k: sum(timed(fn) for _ in range(warmup)) for k, fn in fns.items()}
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            seconds[k].append(timed(fns[k]))
        if log:
            say(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.3g} s" for k, v in seconds.items()))
    seconds.update({f"{k}:warmup": [w] for k, w in warm.items()})
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rates(n: float, seconds: list[float]) -> dict[str, float]:
    """`n` items per call over these call times: the median rate and the best."""
    return {"per_s": n / median(seconds), "best_per_s": n / min(seconds)}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- machine
def processor_kind(flags: Iterable[str], env: dict[str, str] | None = None) -> str:
    """amx | avx512bf16 | avx512 | avx2 | the machine's architecture: what decides how bf16 runs here; with
    kernels held to an instruction set by the environment, that too."""
    flags = set(flags)
    kind = next(
        (
            k
            for f, k in (
                ("amx_bf16", "amx"),
                ("avx512_bf16", "avx512bf16"),
                ("avx512f", "avx512"),
                ("avx2", "avx2"),
                ("bf16", "arm-bf16"),
            )
            if f in flags
        ),
        platform.machine() or "cpu",
    )
    held = {v.lower() for k, v in (env or {}).items() if k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    return f"{kind} (kernels held to {'/'.join(sorted(held))})" if held else kind


def cores() -> dict[str, int | None]:
    """Logical CPUs and how many share a core (SMT): two threads on one core share its matrix units."""
    per_core = None
    try:
        text = Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text().strip()
        per_core = sum(int(r.split("-")[-1]) - int(r.split("-")[0]) + 1 for r in text.split(","))
    except (OSError, ValueError):
        pass
    n = os.cpu_count() or 1
    return {"cpus": n, "cores": n // per_core if per_core else None, "smt": per_core}


def machine() -> dict[str, Any]:
    """What a figure depends on: processor and its kind, the bf16/AMX flags, threads and cores, GPU, torch, the
    OpenMP/oneDNN environment and the load average."""
    import torch

    from mnist_diffusion.cpu import cpu_flags, cpu_model

    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    flags = cpu_flags()
    return {
        "processor": cpu_model(),
        "kind": processor_kind(flags, env),
        "isa": sorted(flags & set(ISA_FLAGS)),
        "capability": torch.backends.cpu.get_cpu_capability(),
        **cores(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "env": env,
        "load": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def git_revision() -> dict[str, Any] | None:
    """The checkout's commit and whether uncommitted changes (outside the results) may have shaped the figures."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", ".", ":!benchmarks/results", ":!docs/results.md"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"revision": rev, "dirty": bool(status.strip())}


# ---------------------------------------------------------------------------------------------- records
def command_line(argv: list[str]) -> str:
    env = "".join(f"{k}={os.environ[k]} " for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ)
    return f"{env}python -m benchmarks {shlex.join(argv)}"


@dataclass
class Recorder:
    """Appends a case's records to `results/<suite>.jsonl` as they come (a stopped sweep keeps its rows)."""

    results: Path
    command: str
    written: list[dict] = field(default_factory=list)

    def run(self, c: Case, values: dict[str, Any]) -> list[dict]:
        global results_dir
        results_dir = self.results
        say(f"== {c.full} " + " ".join(f"{k}={_text(v)}" for k, v in values.items()))
        import torch

        threads, git, mach, out = torch.get_num_threads(), git_revision(), machine(), []
        try:
            out = self._records(c, values, git, mach)
        finally:
            torch.set_num_threads(threads)  # a case that sets its own threads leaves the next one alone
        self.written += out
        return out

    def _records(self, c: Case, values: dict[str, Any], git, mach) -> list[dict]:
        base = {k: v for k, v in values.items() if not isinstance(v, tuple)}  # list params: the variant says
        out = []
        for variant, metrics in c.fn(**values):
            notes = variant.pop("notes", None) if isinstance(variant, dict) else None
            record = {
                "suite": c.suite,
                "case": c.name,
                "params": {**base, **variant},
                "metrics": metrics,
                "machine": mach,
                "git": git,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": self.command,
            }
            if notes:
                record["notes"] = notes
            append(self.results / f"{c.suite}.jsonl", record)
            say(f"   {_text(variant)}: " + ", ".join(f"{k} {_text(v)}" for k, v in metrics.items()))
            out.append(record)
        return out


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)[:16] + "…" if isinstance(value, str) and len(value) > 40 else str(value)


def append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")


def read_records(results: Path, suites: Iterable[str] = SUITES) -> Iterator[dict]:
    """Every record of the suites' results files, oldest line first; a malformed line is a BenchError."""
    for suite in suites:
        path = results / f"{suite}.jsonl"
        if not path.exists():
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise BenchError(f"{path}:{i} is not a JSON record ({e.msg}).") from None


def last_record(results: Path, suite: str, test: Callable[[dict], bool]) -> dict | None:
    """The newest record of `suite` for which `test` holds."""
    found = [r for r in read_records(results, [suite]) if test(r)]
    return max(found, key=lambda r: r.get("date", "")) if found else None
