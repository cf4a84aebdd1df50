"""The public Python API: load a model and sample, train a recipe, score samples. The CLI calls these.

    >>> import mnist_diffusion
    >>> pipe = mnist_diffusion.load()                      # the packaged class-conditional model
    >>> pipe.sample(4, labels="0-3", steps=4).images.shape
    (4, 28, 28)
    >>> cfg, run_dir = mnist_diffusion.resolve_run("ddpm-cond", out="runs/c", train={"max_steps": 200})
    >>> cfg.train.max_steps, str(run_dir)
    (200, 'runs/c')

More in docs/api.md.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.batches import MAX_SAMPLES, check_whole
from mnist_diffusion.config import RunConfig, apply_overrides, with_changes
from mnist_diffusion.diffusion.samplers import check_settings
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation.report import baseline_labels, check_scoring, evaluate_images, read_samples
from mnist_diffusion.files import check_writable
from mnist_diffusion.pipeline import Pipeline, load
from mnist_diffusion.precision import resolve_precision
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training import run_lock
from mnist_diffusion.training.distributed import is_main_process, shutdown
from mnist_diffusion.training.loop import make_trainer

# On --resume only the length of a run may change; anything else would make it a different run.
# precision, threads and compile: what another machine (or a freed core) runs best; none changes what the run learns.
RESUMABLE_CHANGES = {"train": ("epochs", "max_steps", "precision", "threads", "compile")}


def _changed(cfg: RunConfig, overrides: list[str], sections: dict[str, dict]) -> RunConfig:
    """`cfg` with the overrides applied, its sample settings checked against its noise process now, not when the
    run's first samples are drawn."""
    cfg = with_changes(apply_overrides(cfg, overrides), **sections)
    if cfg.diffusion.kind != "autoencoder":
        check_settings(cfg.sample, cfg.diffusion.kind)
    return cfg


def resolve_run(
    recipe: str | RunConfig = "seed",
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    **sections: dict[str, Any],
) -> tuple[RunConfig, Path]:
    """The config and run directory `train` would use (nothing is written): a new run from a recipe name or a
    RunConfig, with `overrides` ('train.lr=2e-4' strings, as --set) and `sections` (train={'lr': 2e-4}) applied;
    or, with `resume`, the run in that directory, of which only epochs, max_steps, precision and threads may
    change."""
    overrides = list(overrides)
    if resume is not None:
        run_dir = Path(resume)
        state = run_dir / ckpt.STATE_FILE
        if not state.is_file():
            raise UserError(f"Cannot resume {run_dir}: it holds no {ckpt.STATE_FILE}; start a new run instead.")
        cfg = ckpt.load_checkpoint(state, expect_kind="training-state").config
        changed = _changed(cfg, overrides, sections)
        keep = {s: {k: getattr(getattr(cfg, s), k) for k in keys} for s, keys in RESUMABLE_CHANGES.items()}
        if with_changes(changed, **keep) != cfg:
            raise UserError(
                "On resume only train.epochs and train.max_steps may change (and train.precision, "
                "train.threads and train.compile); start a new run for other settings."
            )
        return changed, run_dir
    cfg = _changed(recipe if isinstance(recipe, RunConfig) else get_recipe(recipe), overrides, sections)
    run_dir = Path(out) if out is not None else Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"The output {run_dir} is an existing file, not a run directory; choose a new folder.")
    if (run_dir / ckpt.STATE_FILE).exists() or (run_dir / ckpt.MODEL_FILE).exists():
        raise UserError(f"{run_dir} already holds a run; resume it (--resume {run_dir}) or choose another output.")
    check_writable(run_dir, "run directory", directory=True)
    return cfg, run_dir


def train(
    recipe: str | RunConfig = "seed",
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    samples: bool = True,
    **sections: dict[str, Any],
) -> Path:
    """Train a recipe ('seed', 'ddpm', 'ddpm-cond', 'ldm-ae', 'ldm') or a RunConfig into a run directory.

    Overrides are typed and checked as `--set` is: `train("ddpm-cond", out="runs/c", train={"max_steps": 200},
    model={"channels": [32, 64, 64]})`, or as strings, overrides=["train.lr=2e-4"]. `resume="runs/c"`
    continues that run exactly where it stopped. Stopped by SIGINT (Ctrl-C, a notebook's interrupt) or
    SIGTERM, the run finishes the step under way, saves and raises `RunInterrupted`. One process at a time
    may train in a run directory (a `lock` file there); a new run that fails before its first checkpoint
    leaves no files behind. Writes config.json, metrics.jsonl, checkpoint.safetensors, model.safetensors and, with
    `samples`, samples.png; returns the run directory.
    """
    cfg, run_dir = resolve_run(recipe, out, resume, overrides, **sections)
    main = is_main_process()
    created = not run_dir.exists()
    held = False
    try:
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock.locked(run_dir, enabled=main):
            held = True
            for stale in run_dir.glob(".*.tmp"):  # half-written files of a process killed mid-write
                stale.unlink(missing_ok=True)
            trainer = make_trainer(cfg, run_dir, resume=resume is not None)
            if resume is not None and trainer.progress.step >= trainer.total_steps():
                shutdown()
                if main:
                    print(
                        f"{run_dir} has already finished (step {trainer.progress.step} of {trainer.total_steps()}); "
                        "raise train.epochs or train.max_steps to train it further.",
                        file=sys.stderr,
                    )
                return run_dir
            if main and progress:
                verb = "Resuming" if resume is not None else "Training"
                numerics = resolve_precision(cfg.train.precision, trainer.device, "train")
                layout = ", channels_last" if trainer.channels_last else ""
                print(
                    f"{verb} {cfg.recipe} in {run_dir} on {trainer.device} in {numerics}{layout} "
                    f"(step {trainer.progress.step} of {trainer.total_steps()})",
                    file=sys.stderr,
                )
            try:
                trainer.fit(progress_bar=progress)
            finally:
                shutdown()
            if main and samples:
                pipe = load(run_dir, trainer.device)
                pipe.sample(100 if pipe.num_classes else 64).save(
                    run_dir / "samples.png", nrow=None if pipe.num_classes else 8
                )
    except BaseException:
        if main and held and resume is None and not (run_dir / ckpt.STATE_FILE).exists():
            _remove_failed_start(run_dir, created)
        raise
    return run_dir


def _remove_failed_start(run_dir: Path, created: bool) -> None:
    """A new run that failed before its first checkpoint leaves nothing behind."""
    for name in ("config.json", "metrics.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    if created:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only if empty


def evaluate(
    source: str | Path | Pipeline | np.ndarray | None = None,
    n: int | None = None,
    *,
    labels=None,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    metrics: list[str] | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    baselines: bool = True,
    evaluator: str | None = None,
    progress: bool = False,
    precision: str = "auto",
    compile: bool = False,
    **sampling: Any,
) -> dict:
    """Score samples against real data with the packaged evaluator, beside baselines at the same N.

    source: a model (packaged name, run directory, checkpoint or Pipeline; n samples, default 10,000, at most
    1,000,000, are drawn with `sampling` settings: sampler, steps, guidance, guidance_interval, batch_size), a samples .npz
    ('images' uint8 (N, 28, 28), optional 'labels'), or a uint8 array of images (N, 28, 28).
    labels: for an array, its images' int labels (N,); for a model, what `Pipeline.sample` takes, or 'data':
    the labels of the training images the baseline scores, so samples and baseline share a class mix.
    The dataset defaults to the model's (MNIST for samples). precision: what `load` takes, for a model named by
    path or name ('auto' | 'fp32' | 'bf16'); compile: sample through torch.compile (`load`'s compile).
    Returns the report dict (`evaluation.report.format_report` prints it).
    """
    started = time.perf_counter()
    if n is not None:  # n = 0 is refused, never "the default"
        check_whole("n", n, 1, MAX_SAMPLES)
    check_scoring(metrics, kid_subsets, kid_subset_size, seed)  # before any sample is drawn
    if isinstance(source, np.ndarray):
        images, given, what = source, labels, "images"
        dataset = dataset or "mnist"
        if n is not None:
            images, given = images[:n], None if given is None else given[:n]
    elif isinstance(source, (str, Path)) and Path(source).suffix == ".npz":
        if sampling or labels is not None:
            flag = next(iter(sampling), "labels")
            raise UserError(f"{flag} applies only when the source is a model, but {source} is a .npz of samples.")
        images, given = read_samples(Path(source), n)
        what, dataset = str(source), dataset or "mnist"
    else:
        pipe = source if isinstance(source, Pipeline) else load(source, precision=precision, compile=compile)
        n = 10_000 if n is None else n
        dataset = dataset or pipe.config.data.dataset
        data_dir = data_dir if data_dir is not None else pipe.config.data.data_dir
        if isinstance(labels, str) and labels == "data":
            labels = baseline_labels(n, dataset, seed, data_dir).tolist()
        out = pipe.sample(n, labels=labels, seed=seed, progress=progress, **sampling)
        images, given, what = out.images, out.labels, f"{pipe.name} ({n} samples, seed {seed})"
    report = evaluate_images(
        images,
        given,
        dataset=dataset,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size,
        with_baselines=baselines,
        metrics=metrics,
        evaluator_path=evaluator,
        data_dir=data_dir,
        seed=seed,
        source=what,
    )
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
