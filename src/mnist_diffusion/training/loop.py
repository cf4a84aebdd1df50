"""The training loop: a step, an evaluation hook, checkpoints, and resume that really resumes.

Run directory layout (the unit a user sees):
    config.json              resolved config
    metrics.jsonl            one JSON object per log interval (loss, lr, images/s, loss per timestep quarter)
    lock                     while a process trains here: its pid, host and command (`run_lock`)
    checkpoint.safetensors   full training state (weights, EMA, optimizer, RNG, data position)
    model.safetensors        the weights that sample (EMA if any), config in metadata
    samples.png              a grid sampled at the end
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion import openmp
from mnist_diffusion.config import RunConfig
from mnist_diffusion.data import to_float, training_images
from mnist_diffusion.device import resolve_device
from mnist_diffusion.errors import CheckpointError, UserError
from mnist_diffusion.evaluation.quick import quick_kid
from mnist_diffusion.files import atomic_write_text
from mnist_diffusion.models import build_model, count_parameters
from mnist_diffusion.pipeline import from_training
from mnist_diffusion.precision import PrecisionChoice, autocast, resolve_precision
from mnist_diffusion.training import distributed as dist_utils
from mnist_diffusion.training import stops
from mnist_diffusion.training.data_order import batches_per_epoch, epoch_batches
from mnist_diffusion.training.distill import bind_teacher, init_student
from mnist_diffusion.training.ema import EMA
from mnist_diffusion.training.init_weights import init_weights
from mnist_diffusion.training.latent_binding import bind_autoencoder
from mnist_diffusion.training.layout import resolve_layout
from mnist_diffusion.training.logger import MetricsLogger, rewind_metrics
from mnist_diffusion.training.objectives import make_objective
from mnist_diffusion.training.optim import build_optimizer, load_optimizer_tensors, lr_at, optimizer_tensors


class TrainingError(UserError):
    """Training cannot go on (a NaN loss, say); the last good checkpoint is kept."""


class RunInterrupted(KeyboardInterrupt):
    """Training was stopped by signal `signum` after `step` and saved; `train --resume run_dir` continues it
    exactly (the same weights, EMA, optimizer and random state as a run that never stopped)."""

    def __init__(self, run_dir: Path, step: int, signum: int = 2):
        super().__init__(f"stopped at step {step}; saved in {run_dir}")
        self.run_dir, self.step, self.signum = run_dir, step, signum


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batch: int = 0  # next batch index within the epoch
    last_good_step: int | None = None


@dataclass
class Trainer:
    cfg: RunConfig
    run_dir: Path
    device: torch.device
    net: nn.Module
    opt: torch.optim.Optimizer
    ema: EMA | None
    images: torch.Tensor  # uint8 (N, 1, 28, 28) on device
    labels: torch.Tensor  # int64 (N,) on device
    objective: Any
    progress: Progress = field(default_factory=Progress)
    generator: torch.Generator | None = None
    channels_last: bool = False  # NHWC weights and batches (`layout.resolve_layout`)
    dist: dist_utils.Dist = field(default_factory=dist_utils.Dist)
    train_net: nn.Module | None = None  # DDP-wrapped and/or compiled view of `net` used for the forward pass
    numerics: PrecisionChoice | None = None  # the run's precision, resolved once (None: from train.precision)

    # ---- one step -------------------------------------------------------------------------------------
    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_float(self.images[indices], self.cfg.data.value_range)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[indices]

    def train_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """One optimizer step on a batch; returns the loss and per-sample details for logging."""
        tc = self.cfg.train
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.progress.step, tc)
        net = self.train_net if self.train_net is not None else self.net  # bool() of a compiled module raises
        with autocast(self.device, self.numerics or tc.precision):
            out = self.objective(net, x, labels, self.generator)
        loss = out["loss"]
        # Every rank must take the same branch here, or the gradient all-reduce in backward() waits forever.
        global_loss, stop = dist_utils.agree(self.dist, loss)
        if not torch.isfinite(global_loss):
            raise TrainingError(
                f"The loss became {global_loss.item()} at step {self.progress.step}; the last good checkpoint "
                f"(step {self.progress.last_good_step}) is kept in {self.run_dir / ckpt.STATE_FILE}. "
                "Lower train.lr or set train.grad_clip, then resume."
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if out.pop("gradients_unsynced", False):  # the objective ran the bare module, past DDP's gradient hooks
            dist_utils.average_gradients(self.dist, self.net)
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), tc.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update(self.net)
        self.progress.step += 1
        dist_utils.write_checksum(self.dist, self.net, self.progress.step)
        out["loss"] = global_loss  # what is logged: the mean over the whole global batch
        out["stop"] = stop  # under torchrun: whether any rank was asked to stop, agreed before the update
        return out

    # ---- state --------------------------------------------------------------------------------------------
    def sampling_weights(self) -> dict[str, torch.Tensor]:
        return self.ema.state_dict() if self.ema is not None else self.net.state_dict()

    def save(self) -> None:
        """Write checkpoint.safetensors and model.safetensors (rank 0 only), atomically."""
        if not self.dist.is_main:
            self.progress.last_good_step = self.progress.step  # rank 0 saved this same step
            return
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, opt_info = optimizer_tensors(self.opt)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.generator is not None:
            tensors["rng.generator"] = self.generator.get_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        p = self.progress
        info = {
            "step": p.step,
            "epoch": p.epoch,
            "batch": p.batch,
            "optimizer": opt_info,
            "ema_updates": self.ema.updates if self.ema else 0,
        }
        ckpt.save_training_state(self.run_dir / ckpt.STATE_FILE, self.cfg, tensors, info)
        ckpt.save_model(self.run_dir / ckpt.MODEL_FILE, self.cfg, self.sampling_weights(), {"step": p.step})
        p.last_good_step = p.step

    def restore(self, loaded: ckpt.Loaded) -> None:
        """Load a training state written by `save`. Every tensor's name, shape and dtype and every field of its
        metadata is checked first, so a damaged or foreign file is refused with one sentence and nothing of it
        is loaded (no wrongly shaped EMA tensor broadcast into the EMA, no file rewritten)."""
        t, info = loaded.tensors, loaded.info
        ckpt.check_tensors(loaded.path, t, self._state_layout(t))
        self._check_info(loaded.path, info)
        self.net.load_state_dict(ckpt.split_prefix(t, "model"))
        if self.ema is not None:
            for k, v in ckpt.split_prefix(t, "ema").items():
                self.ema.shadow[k].copy_(v)
            self.ema.updates = int(info.get("ema_updates", 0))
        # Adam keeps its step counters on the CPU: CUDA ones would cost a host sync per parameter per step.
        opt_tensors = {k: v.cpu() if k.endswith(".step") else v.to(self.device) for k, v in t.items()}
        load_optimizer_tensors(self.opt, opt_tensors, info["optimizer"])
        torch.set_rng_state(t["rng.torch"].cpu())
        if self.generator is not None and "rng.generator" in t:
            self.generator.set_state(t["rng.generator"].cpu())
        if self.device.type == "cuda" and "rng.cuda" in t:
            torch.cuda.set_rng_state(t["rng.cuda"].cpu(), self.device)
        self.progress = Progress(info["step"], info["epoch"], info["batch"], info["step"])

    def _state_layout(self, found: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What `save` writes for this run, name -> a tensor of its shape and dtype. Optimizer moments are there
        once a step has been taken: then every parameter has the same entries, shaped like the parameter, and a
        0-d 'step' count."""
        weights = self.net.state_dict()
        layout = {f"model.{k}": v for k, v in weights.items()}
        if self.cfg.train.ema_decay:  # rank 0's EMA (float32 copies), also in the file other ranks read
            layout.update({f"ema.{k}": torch.empty(v.shape, dtype=torch.float32) for k, v in weights.items()})
        params = [p for group in self.opt.param_groups for p in group["params"]]
        keys = {k.split(".", 2)[2] for k in found if k.startswith("optim.0.") and k.count(".") == 2}
        count = torch.empty((), dtype=torch.float32)  # Adam's step count
        layout.update({f"optim.{i}.{k}": count if k == "step" else p for i, p in enumerate(params) for k in keys})
        layout["rng.torch"] = torch.get_rng_state()
        if self.generator is not None:
            layout["rng.generator"] = self.generator.get_state()
        cuda = found.get("rng.cuda")  # a CUDA run's; a run that moves to or from the CPU starts or drops it
        if cuda is not None:
            layout["rng.cuda"] = torch.empty(cuda.shape[:1], dtype=torch.uint8)
        return layout

    def _check_info(self, path: Path, info: dict[str, Any]) -> None:
        """The training-state metadata `save` writes, each field of its type and range, else one sentence."""
        per_epoch = batches_per_epoch(len(self.images), self.cfg.train.batch_size)
        for key, high in (("step", None), ("epoch", None), ("batch", per_epoch), ("ema_updates", None)):
            value = info.get(key, 0 if key == "ema_updates" else None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or (high and value > high):
                bound = f"from 0 to {high}" if high else ">= 0"
                raise CheckpointError(
                    f"{path} records {key} as {value!r}, not a whole number {bound}; the file is damaged."
                )
        saved, groups = info.get("optimizer"), self.opt.param_groups
        ok = isinstance(saved, dict) and isinstance(saved.get("param_groups"), list)
        ok = ok and isinstance(saved.get("scalars", {}), dict) and len(saved["param_groups"]) == len(groups)
        for old, new in zip(saved["param_groups"] if ok else [], groups):
            ok = ok and isinstance(old, dict) and set(old) == set(new)
            ok = ok and all(_same_kind(old[k], new[k]) for k in new if k != "params")
            ok = ok and isinstance(old["params"], list) and len(old["params"]) == len(new["params"])
        count = sum(len(group["params"]) for group in groups)
        for name, value in saved.get("scalars", {}).items() if ok else ():  # "<parameter>.<key>": a number
            pid = name.split(".", 1)[0]
            ok = ok and "." in name and pid.isdigit() and int(pid) < count and _same_kind(value, 0.0)
        if not ok:
            raise CheckpointError(
                f"{path} records optimizer settings that do not fit this run's optimizer; the file is damaged."
            )

    # ---- the loop -----------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        per_epoch = batches_per_epoch(len(self.images), self.cfg.train.batch_size)
        total = per_epoch * self.cfg.train.epochs
        return min(total, self.cfg.train.max_steps) if self.cfg.train.max_steps else total

    def fit(self, progress_bar: bool = True, stop_after: int | None = None) -> Progress:
        """Train to the configured length; SIGINT / SIGTERM stop it after the step under way, saved, by raising
        RunInterrupted (`stops`). `stop_after` (steps, for tests) stops early, saved, and returns."""
        tc = self.cfg.train
        total = self.total_steps()
        logger = MetricsLogger(
            self.run_dir,
            total,
            tc,
            self.cfg.diffusion.timesteps,
            self.dist.is_main and progress_bar,
            self.dist.is_main,
            initial=self.progress.step,
        )
        self.net.train()
        with stops.stop_at_step_boundaries(announce=self.dist.is_main), contextlib.closing(logger):
            while self.progress.step < total:
                p = self.progress
                for b, idx in epoch_batches(
                    len(self.images),
                    tc.batch_size,
                    p.epoch,
                    tc.seed,
                    self.dist.rank,
                    self.dist.world_size,
                    start=p.batch,
                ):
                    out = self.train_step(*self.batch(idx))
                    p.batch = b + 1
                    logger.record(p, out, tc.batch_size, lr_at(p.step - 1, tc))
                    if p.step % tc.checkpoint_every == 0:
                        self.save()
                    if tc.eval_every and p.step % tc.eval_every == 0:
                        self.evaluate_hook(logger)
                    # A signal seen here lands between two whole steps: what is saved is what an uninterrupted
                    # run holds at this step. Under torchrun the ranks' agreed flag decides, so all stop together.
                    if out["stop"] or (not self.dist.enabled and stops.requested() is not None):
                        self.save()
                        raise RunInterrupted(self.run_dir, p.step, stops.requested() or signal.SIGINT)
                    if p.step >= total or (stop_after is not None and p.step >= stop_after):
                        break
                else:
                    p.epoch, p.batch = p.epoch + 1, 0
                    self.save()
                    continue
                if stop_after is not None and p.step >= stop_after:
                    break
            self.save()
        return self.progress

    def evaluate_hook(self, logger) -> None:
        """KID and label accuracy on a small sample set, logged beside the loss (rank 0). Building the networks
        draws initial weights from torch's global generator, which dropout also uses: the check runs on a fork
        of it, so a run draws the same masks with or without it, and a resume from a checkpoint saved at this
        step goes on as the run did."""
        if not self.dist.is_main:
            return
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            out = from_training(self.cfg, self.sampling_weights(), self.device).sample(
                self.cfg.train.eval_samples, seed=12345
            )
            scores = quick_kid(out.images, out.labels, self.cfg.data.dataset)
        logger.write({"step": self.progress.step, "eval": scores})


def _same_kind(saved: Any, current: Any) -> bool:
    """Whether an optimizer setting read back from JSON is of the kind the optimizer holds (numbers as numbers,
    flags as flags, betas as a pair of numbers)."""
    if isinstance(current, bool) or current is None or isinstance(current, str):
        return type(saved) is type(current)
    if isinstance(current, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(current, (list, tuple)):
        return isinstance(saved, list) and len(saved) == len(current) and all(map(_same_kind, saved, current))
    return True


def make_trainer(cfg: RunConfig, run_dir: Path, resume: bool = False) -> Trainer:
    """Build everything a run needs; with `resume`, restore it from run_dir/checkpoint.safetensors."""
    run_dir = Path(run_dir)
    dist = dist_utils.init()
    device = dist_utils.device_for(dist, resolve_device(cfg.train.device))
    if cfg.train.threads and device.type == "cpu":
        torch.set_num_threads(cfg.train.threads)
    teacher = None
    if cfg.distill is not None:  # a student: the teacher's network, noise process and latent space, hash pinned
        cfg, teacher = bind_teacher(cfg, device)
    if cfg.latent is not None:  # latent diffusion: pin the autoencoder's hash and latent scale before writing anything
        cfg = bind_autoencoder(cfg, device)
    # Decided once, before seeding: a first run on a machine measures the CPU's bf16 probe here.
    # Rank 0's choice on every rank: each rank measuring the probe itself could choose differently.
    numerics = dist_utils.from_rank0(dist, resolve_precision(cfg.train.precision, device, "train"))
    if cfg.diffusion.kind == "meanflow" and numerics.precision == "bf16":
        numerics = PrecisionChoice("fp32", "MeanFlow's Jacobian-vector product does not run under bf16 autocast")
    torch.manual_seed(cfg.train.seed)
    net = build_model(cfg.model).to(device)
    if teacher is not None:
        init_student(net, teacher, cfg)  # before the EMA copies it
    if cfg.train.init and not resume:  # another model's weights to start from, hash recorded
        cfg = init_weights(cfg, net, device)
    layout = resolve_layout(cfg, device, numerics)
    if layout.channels_last:
        net = net.to(memory_format=torch.channels_last)
    ema = EMA(net, cfg.train.ema_decay) if cfg.train.ema_decay and dist.is_main else None  # rank 0 samples
    opt = build_optimizer(net, cfg.train)
    images, labels = training_images(cfg.data, device)
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed + 1 + dist.rank)
    objective = make_objective(cfg, device, teacher)
    trainer = Trainer(
        cfg,
        run_dir,
        device,
        net,
        opt,
        ema,
        images,
        labels,
        objective,
        dist=dist,
        generator=generator,
        channels_last=layout.channels_last,
        numerics=numerics,
    )
    trainer.train_net = dist_utils.wrap(net, dist, device)
    if cfg.train.compile:
        trainer.train_net = torch.compile(trainer.train_net or net)  # the plain `net` is what gets saved
    if resume:
        trainer.restore(ckpt.load_checkpoint(run_dir / ckpt.STATE_FILE, device, expect_kind="training-state"))
        dist_utils.check_same_step(dist, trainer.progress.step)
        if dist.is_main:  # rows logged after the checkpoint (before a kill -9) are logged again from here
            rewind_metrics(run_dir / "metrics.jsonl", trainer.progress.step)
    elif dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json() + "\n")
        info = {
            "event": "start",
            "parameters": count_parameters(net),
            "device": str(device),
            "precision": numerics.precision,
            "precision_reason": numerics.reason,
            "channels_last": layout.channels_last,
            "layout_reason": layout.reason,
            "threads": torch.get_num_threads(),
            "openmp": openmp.waiting(),
            "world_size": dist.world_size,
            "time": time.time(),
        }
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(info) + "\n")
    dist_utils.reseed_other_ranks(dist, cfg.train.seed, trainer.progress.step, generator)
    return trainer
