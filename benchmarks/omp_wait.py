"""How long idle OpenMP threads should spin before they sleep: sampling and training at several spin counts,
on a quiet machine and with busy neighbours.

PyTorch's CPU kernels run on a GNU OpenMP (libgomp) thread team; a thread that finishes its share of a parallel
loop spins for `GOMP_SPINCOUNT` iterations waiting for the next one, then sleeps on a futex (libgomp estimates
100,000 spins a millisecond; its default is 300,000, `OMP_WAIT_POLICY=PASSIVE` makes it 0). Sleeping costs a
wake-up at every parallel loop -- tens of microseconds, which many small operations (the 7x7 maps of a latent
model, eager bf16's casts) feel; spinning long costs whole scheduler slices when other processes share the
cores (docs/performance.md). Each setting runs in its own process (libgomp reads its environment once, when
torch loads), settings in turn round after round; `--busy N` starts N busy-looping processes beside them.

    python benchmarks/omp_wait.py                    # every setting, quiet and beside one busy process per core
    python benchmarks/omp_wait.py --rounds 1 --spins 0 1000 --busy 0 --out /tmp/w.md   # smoke

Writes benchmarks/results/omp_wait.md (--out) with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

# name -> what the workload measures (images/s; sampling at the model's defaults, --sample-n digits a call or one
# digit for "one digit", as the page draws; training at the recipe's batch). Not in the default run: "one digit".
WORKLOADS = {
    "ldm fp32": "sample", "ldm bf16": "sample", "ldm bf16 compiled": "sample",
    "ddpm-cond fp32": "sample", "ddpm-cond bf16": "sample",
    "train ddpm-cond fp32": "train", "train ddpm-cond bf16": "train",
    "ddpm-cond bf16 one digit": "sample", "ldm bf16 one digit": "sample",
    "ddpm-cond-fast bf16 one digit": "sample", "ldm-fast bf16 one digit": "sample",
}
DEFAULT_WORKLOADS = [w for w in WORKLOADS if not w.endswith("one digit")]
DEFAULT_SPINS = (0, 1000, 3000, 10000, 300000)


def setting_env(spins: int) -> dict[str, str]:
    """The environment of a child run with `spins` (0 = OMP_WAIT_POLICY=PASSIVE, as the package sets when the
    user has set nothing; 300000 = libgomp's own default)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["GOMP_SPINCOUNT"] = str(spins)
    return env


def child(args) -> None:
    """Time every workload once in this process (after a warm-up); print one JSON line of images/s."""
    import torch

    from mnist_diffusion.pipeline import load

    sys.path.insert(0, str(Path(__file__).parent))
    from precision import _trainer

    rates = {}
    for name in args.workloads:
        words = name.split()
        if WORKLOADS[name] == "sample":
            pipe = load(words[0], precision=words[1], compile="compiled" in words)
            n = 1 if name.endswith("one digit") else args.sample_n
            pipe.sample(n, seed=0)  # warm-up (and the compile, from inductor's on-disk cache)
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                pipe.sample(n, seed=r + 1)
                times.append(time.perf_counter() - t0)
            rates[name] = n / statistics.median(times)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                ns = Namespace(threads=None, data_limit=1024)
                cfg, trainer, batches = _trainer(words[1], words[2], ns, Path(tmp))
                trainer.train_step(*next(batches))
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    trainer.train_step(*next(batches))["loss"].item()
                    times.append(time.perf_counter() - t0)
                rates[name] = cfg.train.batch_size / statistics.median(times)
    print(json.dumps({"rates": rates, "threads": torch.get_num_threads()}))


def start_hogs(n: int) -> list[subprocess.Popen]:
    """`n` processes that keep one core busy each (pure Python loops, so they touch no OpenMP)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_child(spins: int, args) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", "--repeats", str(args.repeats), "--sample-n", str(args.sample_n),
           "--workloads", *args.workloads]
    out = subprocess.run(cmd, env=setting_env(spins), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["rates"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spins", type=int, nargs="+", default=list(DEFAULT_SPINS),
                    help="GOMP_SPINCOUNT values (0 = sleep at once, the PASSIVE policy)")
    ap.add_argument("--busy", type=int, nargs="+", default=None,
                    help="busy-looping neighbours to measure beside, 0 = a quiet machine (default: 0 and one per core)")
    ap.add_argument("--workloads", nargs="+", default=DEFAULT_WORKLOADS, choices=list(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3, help="processes per setting and condition, settings in turn")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per workload in one process (median)")
    ap.add_argument("--sample-n", type=int, default=64, help="digits per timed sampling call")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "omp_wait.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    sys.path.insert(0, str(Path(__file__).parent))
    from _machine import machine_info
    from _report import write_table

    started = time.perf_counter()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the busy neighbours are stopped below
    results: dict[str, dict[int, dict[str, list[float]]]] = {}
    for busy in args.busy or [0, os.cpu_count() or 2]:
        condition = f"{busy} busy neighbours" if busy else "quiet"
        hogs = start_hogs(busy)
        try:
            results[condition] = {s: {w: [] for w in args.workloads} for s in args.spins}
            for r in range(args.rounds):
                for spins in args.spins:
                    t0 = time.perf_counter()
                    for w, rate in run_child(spins, args).items():
                        results[condition][spins][w].append(rate)
                    print(f"{condition} round {r + 1} spins {spins} ({time.perf_counter() - t0:.0f} s): " + ", ".join(
                        f"{w} {v[-1]:.1f}" for w, v in results[condition][spins].items()), flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()

    minutes = (time.perf_counter() - started) / 60
    lines = [
        "# How long idle OpenMP threads spin: sampling and training at several GOMP_SPINCOUNT values",
        "",
        f"Command: `{' '.join(['python benchmarks/omp_wait.py'] + sys.argv[1:])}` ({minutes:.1f} min)",
        "",
        f"Machine: {machine_info()}",
        "",
        (f"Each cell: images/s, median over {args.rounds} processes (settings in turn, round after round) of the "
         f"median of {args.repeats} timed calls after a warm-up; sampling draws {args.sample_n} digits a call (one "
         f"digit where the workload says so) at the model's defaults, training is the package's step at the "
         f"recipe's batch. Each setting's process is started with `OMP_WAIT_POLICY=PASSIVE` and the "
         f"`GOMP_SPINCOUNT` shown (libgomp spins that long before it sleeps; 0 is what `PASSIVE` alone gives, "
         f"300000 libgomp's own default). Busy neighbours: pure-Python loops, each keeping one of the "
         f"{os.cpu_count()} cores busy beside the measured process. In brackets: against the first spin count."),
        "",
    ]
    for condition, by_spins in results.items():
        lines += [f"## {condition}", "", "| workload | " + " | ".join(f"spin {s}" for s in args.spins) + " |",
                  "|---" * (len(args.spins) + 1) + "|"]
        for w in args.workloads:
            med = {s: statistics.median(by_spins[s][w]) for s in args.spins}
            base = med[args.spins[0]]
            lines.append(f"| {w} | " + " | ".join(
                f"{med[s]:.1f}" + ("" if s == args.spins[0] else f" ({med[s] / base:.2f}x)") for s in args.spins)
                + " |")
        lines.append("")
    raw = args.out.with_suffix(".json")
    lines.append(f"Every round's images/s: [{raw.name}]({raw.name}).")
    write_table(args.out, lines)
    raw.write_text(json.dumps({"command": sys.argv[1:], "machine": machine_info(), "rates": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
