"""Generating digits from a checkpoint path alone: load the model its metadata describes, then sample.

Reproducibility: image i of a run with `--seed S` starts from noise drawn with seed S + i, so deterministic
samplers (DDIM with eta = 0, DPM-Solver++, Heun, the seed's sampler) give the same image i whatever `--n` and
the batch size. Stochastic samplers (DDPM ancestral, DDIM with eta > 0) draw their per-step noise per batch, so
there the whole command is reproducible for a given batch size.

Latent-diffusion runs (config `latent` set) sample (C, 7, 7) latents and decode them with the autoencoder the
run was trained on (hash-checked on load). An autoencoder run has nothing to sample: its "samples" are its
reconstructions of test digits (image i is test image SEED + i), so `sample` and `evaluate` show how well it
reconstructs.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import RunConfig
from mnist_diffusion.data import to_uint8
from mnist_diffusion.errors import UserError
from mnist_diffusion.models import build_model

SHIPPED = {"ddpm-cond": "ddpm-cond.safetensors", "ldm": "ldm.safetensors"}
DEFAULT_MODEL = "ddpm-cond"


@dataclass
class LoadedModel:
    cfg: RunConfig
    net: nn.Module
    device: torch.device
    path: Path | None = None
    autoencoder: Any = None  # latent runs: the `latent.FrozenAutoencoder` that decodes their samples


def latent_autoencoder(model: LoadedModel):
    """The frozen autoencoder of a latent-diffusion model, loaded and hash-checked on first use."""
    if model.autoencoder is None:
        from mnist_diffusion.latent import load_autoencoder

        model.autoencoder = load_autoencoder(model.cfg.latent, model.device, str(model.path or "This model"))
    return model.autoencoder


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a model that ships inside the package."""
    path = Path(str(resources.files("mnist_diffusion") / "assets" / SHIPPED[name]))
    if not path.is_file():
        raise UserError(f"The packaged model {name!r} is missing from {path.parent}; reinstall mnist-diffusion.")
    return path


def resolve(path_or_name: str | Path | None) -> Path:
    """None or a shipped model's name -> its packaged file; a run directory -> its model; a file -> itself."""
    if path_or_name is None:
        return shipped_model_path(DEFAULT_MODEL)
    if str(path_or_name) in SHIPPED and not Path(path_or_name).exists():
        return shipped_model_path(str(path_or_name))
    return ckpt.resolve_model_path(path_or_name)


def load_model(path_or_name: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """The network (in eval mode) and config of a run directory, checkpoint file or shipped model."""
    path = resolve(path_or_name)
    loaded = ckpt.load_checkpoint(path, device)
    weights = loaded.tensors
    if loaded.kind == "training-state":
        weights = ckpt.split_prefix(weights, "ema") or ckpt.split_prefix(weights, "model")
    net = build_model(loaded.config.model).to(device)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ckpt.CheckpointError(f"{path} does not match the network its config describes ({first}).") from None
    net.eval()
    sampling_layout(net, device)
    model = LoadedModel(loaded.config, net, torch.device(device), path)
    if model.cfg.latent is not None:
        latent_autoencoder(model)  # refuse a missing or different autoencoder now, not after sampling
    return model


def sampling_layout(net: nn.Module, device: str | torch.device) -> nn.Module:
    """Put a network's weights in the memory layout that samples fastest on `device`, in place.

    NHWC (channels_last) lets oneDNN on the CPU and cuDNN on CUDA pick faster convolution kernels for inference
    (measured on the 2-core CPU in benchmarks/results/sampling_speed.md); other devices keep NCHW.
    """
    if torch.device(device).type in ("cpu", "cuda"):
        net.to(memory_format=torch.channels_last)
    return net


def parse_labels(spec: str | None, num_classes: int) -> list[int] | None:
    """'0-9' | '7' | '3,5,8' -> a list of class indices (None stays None), checked against num_classes."""
    if spec is None or spec == "":
        return None
    if num_classes == 0:
        raise UserError(f"--labels {spec!r} was given, but this model is unconditional; leave --labels out.")
    out: list[int] = []
    try:
        for part in str(spec).split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--labels {spec!r} is not understood; write e.g. 0-9, 7 or 3,5,8.") from None
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad or not out:
        raise UserError(f"--labels {spec!r} names class {bad[0] if bad else '?'}; classes run from 0 to {num_classes - 1}.")
    return out


def initial_noise(n: int, shape: tuple[int, ...], seed: int, kind: str, device: torch.device, offset: int = 0):
    """Per-image starting noise: image i from its own generator seeded with seed + offset + i."""
    xs = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + offset + i)
        xs.append(torch.rand(shape, generator=g) if kind == "uniform" else torch.randn(shape, generator=g))
    return torch.stack(xs).to(device)


@torch.inference_mode()
def sample_batch(
    model: LoadedModel,
    x_T: torch.Tensor,
    labels: torch.Tensor | None,
    sampler: str,
    steps: int,
    guidance: float,
    spacing: str,
    generator: torch.Generator | None,
    callback: Callable | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Float samples (B, C, 28, 28) in the model's data range, from starting noise x_T (B, C, 28, 28).

    Latent runs start from x_T (B, *latent.shape) and decode the sampled latents; their `callback` sees the
    decoded x_t and x0 prediction, so trajectories and step figures show images.
    """
    cfg = model.cfg
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}.")
    if cfg.diffusion.kind == "seed":
        if sampler not in ("seed", None):
            raise UserError(f"The seed model samples only with the 'seed' sampler, not {sampler!r}.")
        if guidance != 1.0 or labels is not None:
            raise UserError("The seed model is unconditional: leave out --guidance and --labels.")
        from mnist_diffusion.diffusion.seed import sample_seed

        return sample_seed(model.net, x_T, steps, callback=callback)
    from mnist_diffusion.diffusion.denoiser import Denoiser
    from mnist_diffusion.diffusion.samplers import sample
    from mnist_diffusion.diffusion.schedule import make_schedule

    if guidance != 1.0 and cfg.model.num_classes == 0:
        raise UserError(f"--guidance {guidance} needs a class-conditional model; this one is unconditional.")
    schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
    denoiser = Denoiser(model.net, schedule, cfg.diffusion.prediction)
    if cfg.latent is None:
        return sample(sampler, denoiser, x_T, steps, spacing=spacing, labels=labels, guidance=guidance,
                      generator=generator, callback=callback, eta=eta)
    from mnist_diffusion.latent import decode_latents

    ae, scale = latent_autoencoder(model), cfg.latent.scale
    if callback is not None:
        user_callback = callback

        def callback(i, t, z_t, z0):
            user_callback(i, t, decode_latents(ae, z_t, scale), decode_latents(ae, z0, scale))

    z = sample(sampler, denoiser, x_T, steps, spacing=spacing, labels=labels, guidance=guidance,
               generator=generator, callback=callback, eta=eta)
    return decode_latents(ae, z, scale)


def reconstructions(model: LoadedModel, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An autoencoder run's stand-in for samples: uint8 reconstructions of test images seed..seed+n-1 (cycling
    through the test set) and their int64 labels."""
    from mnist_diffusion.data import load_split
    from mnist_diffusion.latent import FrozenAutoencoder, reconstruct

    images, labels = load_split(model.cfg.data.dataset, "test", model.cfg.data.data_dir)
    index = (seed + np.arange(n)) % len(images)
    ae = FrozenAutoencoder(model.net, model.cfg, "", model.path or Path("."))
    return reconstruct(ae, images[index]), labels[index].astype(np.int64)


def generate(
    model: LoadedModel,
    n: int,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    labels: str | list[int] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    spacing: str | None = None,
    callback: Callable | None = None,
    eta: float | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """n samples as uint8 (n, 28, 28) and their int64 labels (None for unconditional models).

    Missing settings come from the model's config (`sample` section). Labels cycle: n = 10000 with '0-9' gives
    1,000 of each digit.
    """
    cfg = model.cfg
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}.")
    if cfg.model.kind == "autoencoder":
        if labels is not None or guidance not in (None, 1.0):
            raise UserError("An autoencoder reconstructs test digits instead of sampling; leave out --labels and "
                            "--guidance.")
        return reconstructions(model, n, seed)
    sampler = sampler or cfg.sample.sampler
    steps = steps if steps is not None else cfg.sample.steps
    guidance = guidance if guidance is not None else (cfg.sample.guidance if cfg.model.num_classes else 1.0)
    spacing = spacing or cfg.sample.spacing
    eta = cfg.sample.eta if eta is None else eta
    classes = parse_labels(labels, cfg.model.num_classes) if isinstance(labels, (str, type(None))) else list(labels)
    if classes is None and cfg.model.num_classes:
        classes = list(range(cfg.model.num_classes))  # a conditional model: every class in turn by default
    all_labels = None if classes is None else np.array([classes[i % len(classes)] for i in range(n)], dtype=np.int64)
    # Small CPU batches keep each layer's activations in cache: 64 samples faster than 256 (sampling_speed.md).
    batch_size = batch_size or (64 if model.device.type == "cpu" else 1000)
    kind = "uniform" if cfg.diffusion.kind == "seed" else "gaussian"
    shape = tuple(cfg.latent.shape) if cfg.latent is not None else (cfg.model.in_channels, 28, 28)
    out = []
    from tqdm import tqdm

    for start in tqdm(range(0, n, batch_size), disable=not progress, unit="batch", desc="sampling"):
        b = min(batch_size, n - start)
        x_T = initial_noise(b, shape, seed, kind, model.device, offset=start)
        lab = None if all_labels is None else torch.from_numpy(all_labels[start : start + b]).to(model.device)
        g = torch.Generator(device=model.device).manual_seed(seed * 7919 + start)
        x = sample_batch(model, x_T, lab, sampler, steps, guidance, spacing, g, callback, eta)
        out.append(to_uint8(x.float().cpu(), cfg.data.value_range))
    return np.concatenate(out), all_labels


def generate_from_path(path, n, sampler=None, steps=None, guidance=None, labels=None, seed=0, batch_size=None,
                       device="cpu", progress=False):
    """`generate` on the model at a run directory, checkpoint file or shipped-model name."""
    model = load_model(path, device)
    return generate(model, n, sampler=sampler, steps=steps, guidance=guidance, labels=labels, seed=seed,
                    batch_size=batch_size, progress=progress)
