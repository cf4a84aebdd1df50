"""Time to quality: a recipe trained from scratch in chunks of images through the public `train` (each chunk a
resume of the run), its EMA weights scored after every chunk (FID of N digits, labels 0-9 in turn, at one sampler
setting, beside the evaluator's train-vs-test baseline FID at the same N), until FID is within the smallest ratio
of the baseline or the image budget is spent. The `training.time_to_quality` case (benchmarks/training.py)."""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

from benchmarks.core import BenchError, say
from benchmarks.quality import scores

# In the run directory, beside the run: the measurement's parameters and one line per scored chunk, what lets a
# stopped measurement go on from its last checkpoint.
MEASUREMENT, CURVE = "measurement.json", "curve.jsonl"


def parse_settings(items: tuple[str, ...]) -> dict[str, dict]:
    """RECIPE:SAMPLER:STEPS:GUIDANCE items as {recipe: sampling keyword arguments}."""
    out = {}
    for item in items:
        recipe, sampler, steps, guidance = (item.split(":") + ["", "", ""])[:4]
        try:
            out[recipe] = {"sampler": sampler, "steps": int(steps), "guidance": float(guidance)}
        except ValueError:
            raise BenchError(
                f"setting {item!r}: write RECIPE:SAMPLER:STEPS:GUIDANCE, e.g. flow-cond:euler:8:1.3."
            ) from None
    return out


def check(recipe: str, sample: dict) -> None:
    """Refuse an unknown recipe, or a sampler setting its noise process cannot take, before anything trains."""
    from mnist_diffusion import UserError, resolve_run

    with tempfile.TemporaryDirectory() as tmp:
        try:
            resolve_run(recipe, out=Path(tmp) / "run", sample=sample)
        except UserError as e:
            raise BenchError(f"{recipe}: {e}") from None


def saved_step(run_dir: Path) -> int:
    """The optimizer step of the run's saved weights; 0 before its first checkpoint."""
    from mnist_diffusion.checkpoint import MODEL_FILE, read_metadata

    path = run_dir / MODEL_FILE
    return int(json.loads(read_metadata(path).get("step", "0"))) if path.is_file() else 0


def earlier_points(run_dir: Path, key: dict) -> list[dict]:
    """The chunks scored in `run_dir` by an earlier measurement with the same parameters; none for a new run."""
    from mnist_diffusion.checkpoint import STATE_FILE

    meta, path = run_dir / MEASUREMENT, run_dir / CURVE
    if not (run_dir / STATE_FILE).exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(key))
        path.unlink(missing_ok=True)
        return []
    if not meta.is_file() or json.loads(meta.read_text()) != key:
        raise BenchError(
            f"{run_dir} holds a run that is not this measurement's, or one with other parameters; choose another out."
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def curve(
    recipe: str,
    sample: dict,
    every: int,
    max_images: int,
    ratios: tuple[float, ...],
    n: int,
    data_limit: int,
    device: str,
    run_dir: Path,
) -> dict:
    """Train `recipe` in `run_dir` chunk by chunk, scoring after each; returns the record's metrics."""
    import mnist_diffusion
    from mnist_diffusion.data import load_split
    from mnist_diffusion.recipes import get_recipe

    cfg = get_recipe(recipe)
    batch = cfg.train.batch_size
    chunk, last = max(1, round(every / batch)), max(1, max_images // batch)  # optimizer steps
    n_train = len(load_split(cfg.data.dataset, "train", cfg.data.data_dir)[0])
    per_epoch = max(1, min(n_train, data_limit or n_train) // batch)  # too few images: `train` says so
    epochs = math.ceil(last / per_epoch)
    key = {"recipe": recipe, "sample": sample, "n": n, "data_limit": data_limit, "batch": batch}
    points = earlier_points(run_dir, key)
    step = points[-1]["step"] if points else 0
    while step < last and not (points and points[-1]["fid"] <= min(ratios) * points[-1]["baseline_fid"]):
        step = min(step + chunk, last)
        start, t0 = saved_step(run_dir), time.perf_counter()
        if start:
            mnist_diffusion.train(
                resume=run_dir, progress=False, samples=False, train={"max_steps": step, "epochs": epochs}
            )
        else:
            mnist_diffusion.train(
                recipe,
                run_dir,
                progress=False,
                samples=False,
                train={"max_steps": step, "epochs": epochs, "device": device},
                data={"limit": data_limit or None},
            )
        train_s, t0 = time.perf_counter() - t0, time.perf_counter()
        pipe = mnist_diffusion.load(run_dir, device)
        out = pipe.sample(n, labels="0-9", seed=0, **sample)
        got = scores(out.images, out.labels, ("fid", "label_accuracy"))
        point = {"step": step, "images": step * batch, "trained": (step - start) * batch, "train_s": train_s}
        point.update({k: got[k] for k in ("fid", "baseline_fid", "label_accuracy")})
        point.update(eval_s=time.perf_counter() - t0, sample_precision=pipe.precision.precision)
        with open(run_dir / CURVE, "a") as f:
            f.write(json.dumps(point) + "\n")
        points.append(point)
        say(
            f"   {recipe}: {point['images']:,} images, FID {point['fid']:.3g} = "
            f"{point['fid'] / point['baseline_fid']:.3g}x the baseline, {train_s:.0f} s training"
        )
    logged = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    start = next((e for e in logged if e.get("event") == "start"), {})  # the numerics the run chose
    return {**summary(points, ratios), "train_precision": start.get("precision"), "threads": start.get("threads")}


def summary(points: list[dict], ratios: tuple[float, ...]) -> dict:
    """Images and training minutes (at the measured images/s) to each ratio of the baseline; the whole curve."""
    trained, seconds = sum(p["trained"] for p in points), sum(p["train_s"] for p in points)
    per_s = trained / seconds if seconds else float("nan")
    out: dict = {}
    for r in sorted(ratios, reverse=True):
        hit = next((p["images"] for p in points if p["fid"] <= r * p["baseline_fid"]), None)
        out[f"images_to_{r:g}x"] = hit
        out[f"minutes_to_{r:g}x"] = None if hit is None else hit / per_s / 60
    last = points[-1] if points else {}
    return {
        **out,
        "images_per_s": per_s,
        "baseline_fid": points[0]["baseline_fid"] if points else None,
        "final_fid": last.get("fid"),
        "final_label_accuracy": last.get("label_accuracy"),
        "sample_precision": last.get("sample_precision"),
        "train_minutes": seconds / 60,
        "eval_minutes": sum(p["eval_s"] for p in points) / 60,
        "curve": [[p["images"], round(p["fid"], 4)] for p in points],
    }
