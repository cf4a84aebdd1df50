"""What `load` gives for an autoencoder: it samples nothing, so its `sample` shows how well it reconstructs --
image i is test image seed + i (cycling) through the autoencoder -- with the same signature and result as
`Pipeline.sample`, so `sample`, `evaluate` and a run's closing grid work on it unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import RunConfig
from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.errors import UserError
from mnist_diffusion.latent import FrozenAutoencoder, reconstruct
from mnist_diffusion.precision import PrecisionChoice
from mnist_diffusion.sample_result import SampleResult


class AutoencoderPreview:
    """An autoencoder model file, loaded: `preview.sample(n, seed=S)` -> reconstructions of test digits S..S+n-1.
    It always runs in fp32."""

    num_classes = 0
    precision = PrecisionChoice("fp32", "an autoencoder reconstructs in fp32")
    compiled = False
    guide = None

    def __init__(self, config: RunConfig, net: nn.Module, device: torch.device, path: Path, name: str):
        self.config, self.net, self.device, self.path, self.name = config, net, device, path, name

    @property
    def value_range(self) -> str:
        return self.config.data.value_range

    def __repr__(self) -> str:
        return f"AutoencoderPreview({self.name!r}: {self.config.recipe}, {self.device})"

    def to(self, device: str | torch.device) -> AutoencoderPreview:
        self.device = torch.device(device)
        self.net.to(self.device)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the weights with their config as a model file (a directory gets `model.safetensors`)."""
        path = Path(path)
        path = path if path.suffix == ".safetensors" else path / ckpt.MODEL_FILE
        ckpt.save_model(path, self.config, self.net.state_dict())
        return path

    def sample(self, n: int = 64, labels=None, guidance: float | None = None, seed: int = 0, **ignored) -> SampleResult:
        """uint8 reconstructions of test images seed .. seed + n - 1 (cycling), labelled with their digits.
        Sampler settings (steps, sampler, progress, ...) are accepted and mean nothing here."""
        if labels is not None or guidance not in (None, 1.0):
            raise UserError(
                "An autoencoder reconstructs test digits instead of sampling; leave out labels and guidance."
            )
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"n must be a whole number of images >= 1, got {n!r}.")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise UserError(f"seed must be a whole number >= 0, got {seed!r}.")
        started = time.perf_counter()
        images, test_labels = load_split(self.config.data.dataset, "test", self.config.data.data_dir)
        index = (seed + np.arange(n)) % len(images)
        ae = FrozenAutoencoder(self.net, self.config, "", self.path or Path("."))
        rec = reconstruct(ae, images[index])
        info = {
            "model": self.name,
            "reconstructions": True,
            "seed": seed,
            "n": n,
            "seconds": time.perf_counter() - started,
        }
        return SampleResult(
            rec, test_labels[index].astype(np.int64), to_float(rec, self.value_range), self.value_range, info
        )

    def inpaint(self, *args, **kwargs) -> SampleResult:
        raise UserError("An autoencoder does not sample, so it cannot complete digits; use a diffusion model.")
