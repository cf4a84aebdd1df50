"""Sample quality at equal training compute: the project's `ddpm-cond` recipe against the diffusers course model.

What is compared
- ours: the `ddpm-cond` recipe exactly as `mnist-diffusion train --recipe ddpm-cond --set train.threads=1` runs it
  (the package's `make_trainer` and `Trainer.train_step`: class-conditional U-Net, min-SNR-5 eps loss, AdamW
  2e-3 with 20 warm-up steps, gradient clipping, label dropout, EMA 0.999; the same per-epoch batch order as
  `Trainer.fit`; the learning rate is constant after warm-up, so the configured epoch count changes nothing).
  Snapshots hold the EMA weights, the ones that sample. Sampled with the recipe's defaults through
  `load(snapshot).sample(n, labels="0-9")`: DPM-Solver++(2M), 20 steps, guidance 2, labels 0-9 cycling.
- peer: diffusers' UNet2DModel trained and sampled as in the Hugging Face diffusion course (see _peer.py:
  unconditional, cosine-schedule DDPM, eps MSE, AdamW 4e-4, batch 128, no EMA); snapshots hold its raw weights.
  Sampled with DDIM (eta 0), 50 steps.

How compute is counted
Each side trains ONE run in its own process with `torch.set_num_threads(1)` (and OMP/MKL at 1 thread); both
processes run at the same time, so training takes about the largest budget in wall time when each gets a core.
After every optimizer step a process reads its own CPU time (`time.process_time()`, counted from the first step,
so imports and data loading are left out, as is the time spent writing snapshots); when that crosses a budget
it writes a snapshot at once. So a snapshot is exact: it is the model after the first step that took the
process past the budget, and its actual CPU-minutes are recorded beside the budget. CPU time, unlike wall
time, is barely moved by other jobs on the machine.

How quality is measured
After training, with --eval-threads threads, every snapshot draws --n samples (seed 0: image i starts from
noise seeded i on both sides) and is scored by `mnist_diffusion.evaluation.report.evaluate_images` against the
MNIST test set in the project's evaluator's features: FID, KID, class entropy, and for ours label accuracy.
The baseline is N real training images scored the same way (the report's train-vs-test baseline at the same N).

    python benchmarks/peer_budget.py --budgets 5 10 20 --n 500             # writes benchmarks/results/peer_budget.*
    python benchmarks/peer_budget.py --budgets 0.1 0.2 --n 50 --out /tmp/peer_budget_smoke.md   # smoke test

On an idle 2-core machine the smoke test takes about 3 minutes (8 with the load average near 4); the full run
about an hour: training takes the largest budget, then sampling is dominated by the peer (DDIM 50 steps through
attention at 14x14 runs near 1 image/s on 2 threads; 0.27 with the machine shared), 3 x 500 images per side.

Writes OUT (markdown), OUT with .json (every number) and OUT with .png (FID@N against CPU-minutes). Snapshots
stay in --work-dir (a fresh folder under /tmp by default); `--evaluate-only --work-dir DIR` scores them again.
Needs diffusers (a benchmark-only dependency): pip install -r benchmarks/requirements.txt
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "peer_budget.md"
SIDES = ("ours", "peer")
LABELS = {"ours": "ours (ddpm-cond)", "peer": "peer (diffusers, HF course)"}
OURS_RECIPE = "ddpm-cond"
BATCH = 128  # both sides: the recipe's batch and the course's
METRICS = {"ours": ("fid", "kid", "classes", "label_accuracy"), "peer": ("fid", "kid", "classes")}
DESCRIPTION = {
    "ours": f"`{OURS_RECIPE}` recipe, EMA weights; DPM-Solver++(2M) 20 steps, guidance 2, labels 0-9 cycling",
    "peer": "diffusers UNet2DModel, HF course training, raw weights; DDIM 50 steps, unconditional",
}


# ------------------------------------------------------------------------------------ training (one side)
def endless_batches(n_images: int, seed: int):
    """Index batches (BATCH,) forever, epoch after epoch, in the training loop's own order."""
    from mnist_diffusion.training.data_order import epoch_batches

    epoch = 0
    while True:
        for _, idx in epoch_batches(n_images, BATCH, epoch, seed):
            yield idx
        epoch += 1


def ours_side(work: Path, seed: int):
    """(step(indices), save(path, steps), number of training images) for the `ddpm-cond` recipe."""
    from mnist_diffusion import checkpoint as ckpt
    from mnist_diffusion.recipes import get_recipe
    from mnist_diffusion.training.loop import make_trainer

    cfg = get_recipe(OURS_RECIPE)
    cfg = replace(cfg, train=replace(cfg.train, threads=1, device="cpu", seed=seed))
    trainer = make_trainer(cfg, work / "ours-run")
    trainer.net.train()

    def step(idx: torch.Tensor) -> None:
        trainer.train_step(*trainer.batch(idx))

    def save(path: Path, steps: int) -> None:
        ckpt.save_model(path, cfg, trainer.sampling_weights(), {"step": steps})

    return step, save, len(trainer.images)


def peer_side(work: Path, seed: int):
    """(step(indices), save(path, steps), number of training images) for the course's UNet2DModel."""
    from _peer import PeerTrainer
    from mnist_diffusion.data import load_split, to_float

    images = torch.from_numpy(load_split("mnist", "train")[0])
    trainer = PeerTrainer(seed)

    def step(idx: torch.Tensor) -> None:
        trainer.train_step(to_float(images[idx], "signed"))

    def save(path: Path, steps: int) -> None:
        trainer.save(path)

    return step, save, len(images)


def train_side(side: str, budgets: list[float], work: Path, seed: int) -> None:
    """Train one side on one thread, writing a snapshot each time its CPU time crosses a budget (minutes)."""
    torch.set_num_threads(1)
    step, save, n_images = (ours_side if side == "ours" else peer_side)(work, seed)
    pending, snapshots, steps, excluded = sorted(budgets), [], 0, 0.0
    batches = endless_batches(n_images, seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while pending:
        step(next(batches))
        steps += 1
        spent = time.process_time() - cpu0 - excluded
        if spent < 60 * pending[0]:
            continue
        save_start = time.process_time()
        path = work / f"{side}-{pending[0]:g}min.safetensors"
        save(path, steps)
        while pending and spent >= 60 * pending[0]:  # one long step may cross several small budgets
            snapshots.append({"side": side, "budget_min": pending.pop(0), "cpu_min": spent / 60, "steps": steps,
                              "images_seen": steps * BATCH, "train_wall_s": time.perf_counter() - wall0,
                              "path": str(path)})
            print(f"{side}: budget {snapshots[-1]['budget_min']:g} CPU-min reached at step {steps} "
                  f"({spent / 60:.2f} CPU-min)", flush=True)
        (work / f"{side}.json").write_text(json.dumps(snapshots, indent=1) + "\n")
        excluded += time.process_time() - save_start


def train_both(budgets: list[float], work: Path, seed: int) -> float:
    """Run both sides at once, each in its own one-thread process; returns the wall seconds it took."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0, procs = time.perf_counter(), {}
    try:
        for side in SIDES:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--train-side", side, "--work-dir", str(work), "--seed", str(seed),
                   "--budgets", *map(str, budgets)]
            log = open(work / f"{side}.log", "w")
            procs[side] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        for side, proc in procs.items():
            if proc.wait() != 0:
                raise SystemExit(f"Training {side} failed (exit {proc.returncode}); see {work / f'{side}.log'}.")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------ evaluation
def draw(snapshot: dict, n: int) -> tuple[np.ndarray, np.ndarray | None, float]:
    """n samples of a snapshot as uint8 (n, 28, 28), their labels (None for the peer) and images/s."""
    from _peer import load_peer, sample_peer
    from mnist_diffusion.pipeline import load

    if snapshot["side"] == "ours":
        pipe = load(snapshot["path"])
        t0 = time.perf_counter()
        out = pipe.sample(n, labels="0-9", seed=0)
        images, labels = out.images, out.labels
    else:
        net = load_peer(Path(snapshot["path"]))
        t0 = time.perf_counter()
        images, labels = sample_peer(net, n, seed=0), None
    return images, labels, n / (time.perf_counter() - t0)


def evaluate(snapshots: list[dict], n: int) -> dict:
    """Score every snapshot in place (keys 'metrics', 'sample_img_per_s'); returns the train and noise baselines."""
    from mnist_diffusion.evaluation.report import evaluate_images

    baselines: dict = {}
    for s in snapshots:
        images, labels, rate = draw(s, n)
        report = evaluate_images(images, labels, metrics=METRICS[s["side"]], with_baselines=not baselines,
                                 source=f"{s['side']} at {s['budget_min']:g} CPU-min")
        baselines = baselines or report["baselines"]
        s["metrics"], s["sample_img_per_s"] = report["samples"], rate
        print(f"{s['side']} {s['budget_min']:g} CPU-min: FID@{n} {s['metrics']['fid']:.3f}, {rate:.2f} img/s",
              flush=True)
    return baselines


# ------------------------------------------------------------------------------------ output
def load_average() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def table(rows: list[dict], baselines: dict, n: int) -> list[str]:
    """One budget's markdown table: both sides, then the real-image and uniform-noise baselines."""
    base = baselines["train"]
    out = [f"| side | steps | images seen | CPU-min | FID@{n} | FID / baseline | KID×1e3 | class entropy (bits) "
           "| label accuracy | sampling img/s |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        m = s["metrics"]
        acc = f"{m['label_accuracy']:.3f}" if "label_accuracy" in m else "n/a (unconditional)"
        out.append(f"| {s['side']} | {s['steps']:,} | {s['images_seen']:,} | {s['cpu_min']:.2f} | {m['fid']:.3f} "
                   f"| {m['fid'] / base['fid']:.1f}x | {1e3 * m['kid_mean']:.2f} ± {1e3 * m['kid_std']:.2f} "
                   f"| {m['class_entropy_bits']:.3f} | {acc} | {s['sample_img_per_s']:.2f} |")
    for key, name in (("train", f"{n} real training images (baseline)"), ("noise", f"{n} uniform-noise images")):
        b = baselines[key]
        out.append(f"| *{name}* | | | | {b['fid']:.3f} | {b['fid'] / base['fid']:.1f}x "
                   f"| {1e3 * b['kid_mean']:.2f} ± {1e3 * b['kid_std']:.2f} | {b['class_entropy_bits']:.3f} | | |")
    return out


def markdown(result: dict) -> str:
    n = result["n"]
    lines = [
        "# Quality at equal training compute: ours against the diffusers course model",
        "",
        f"Command: `{result['command']}`",
        f"Machine: {result['machine']}",
        f"Load average (1/5/15 min): {result['load_start']} at the start, {result['load_end']} at the end "
        "(2 cores: near or above 2 means shared-machine numbers; CPU-minute budgets are barely affected, "
        "sampling images/s are).",
        "",
        f"- ours: {DESCRIPTION['ours']}.",
        f"- peer: {DESCRIPTION['peer']}.",
        "- Each side trained one run on 1 thread, both at once; a snapshot was written at the first optimizer step "
        "whose process CPU time (from the first step) passed each budget. Batch 128 on both sides.",
        f"- Every snapshot drew {n} samples (seed 0) with {result['eval_threads']} threads, scored against the "
        "10,000 MNIST test images in the project's evaluator's features; the baseline is "
        f"{n} real training images scored the same way.",
        f"- Wall time: training {result['train_wall_s'] / 60:.1f} min, evaluation {result['eval_wall_s'] / 60:.1f} min.",
    ]
    for side in SIDES:
        last = [s for s in result["snapshots"] if s["side"] == side][-1]
        lines.append(f"- {side} trained at {last['images_seen'] / (60 * last['cpu_min']):.1f} images per CPU-second.")
    for budget in result["budgets"]:
        rows = [s for s in result["snapshots"] if s["budget_min"] == budget]
        lines += ["", f"## {budget:g} CPU-minutes", ""] + table(rows, result["baselines"], n)
    lines += ["", f"![FID@{n} against CPU-minutes]({Path(result['plot']).name})", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """FID@N (log scale) against actual CPU-minutes, one line per side, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = result["n"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for side in SIDES:
        rows = [s for s in result["snapshots"] if s["side"] == side]
        ax.plot([s["cpu_min"] for s in rows], [s["metrics"]["fid"] for s in rows], "o-", label=LABELS[side])
    ax.axhline(result["baselines"]["train"]["fid"], color="gray", ls="--", label=f"{n} real training images")
    ax.set(xlabel="training CPU-minutes (1 thread)", ylabel=f"FID@{n} (log)", yscale="log",
           title="Sample quality at equal training compute")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(out.with_suffix(".png"))
    plot(result, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.write_text(markdown(result))


# ------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[5.0, 10.0, 20.0], help="CPU-minutes per snapshot")
    p.add_argument("--n", type=int, default=500, help="samples per snapshot")
    p.add_argument("--out", type=Path, default=RESULTS, help="markdown results file; .json and .png go beside it")
    p.add_argument("--work-dir", type=Path, default=None, help="where snapshots go (default: a new folder in /tmp)")
    p.add_argument("--evaluate-only", action="store_true", help="score the snapshots already in --work-dir")
    p.add_argument("--eval-threads", type=int, default=2, help="torch threads for sampling and scoring")
    p.add_argument("--seed", type=int, default=0, help="training seed of both sides")
    p.add_argument("--train-side", choices=SIDES, help=argparse.SUPPRESS)  # the child processes' entry
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.train_side:
        train_side(args.train_side, args.budgets, args.work_dir, args.seed)
        return 0
    if args.evaluate_only and args.work_dir is None:
        raise SystemExit("--evaluate-only needs --work-dir, the folder that holds the snapshots.")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="peer_budget_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"snapshots in {work}", flush=True)
    load_start = load_average()
    train_wall = 0.0 if args.evaluate_only else train_both(args.budgets, work, args.seed)
    snapshots = [s for side in SIDES for s in json.loads((work / f"{side}.json").read_text())]
    torch.set_num_threads(args.eval_threads)
    t0 = time.perf_counter()
    baselines = evaluate(snapshots, args.n)
    result = {
        "command": "python benchmarks/peer_budget.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(), "load_start": load_start, "load_end": load_average(), "n": args.n,
        "budgets": sorted({s["budget_min"] for s in snapshots}), "seed": args.seed, "eval_threads": args.eval_threads,
        "train_wall_s": train_wall, "eval_wall_s": time.perf_counter() - t0, "work_dir": str(work),
        "description": DESCRIPTION, "baselines": baselines, "snapshots": snapshots,
    }
    write_outputs(result, args.out)
    print(f"wrote {args.out}, {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
