"""A model loaded for sampling -- `load(name_or_path)` -> `Pipeline` -> `pipe.sample(n)` -> `SampleResult`.

The CLI's `sample`, `evaluate` and `figures`, the training loop's in-run check, the page and the notebooks all
sample through `Pipeline.sample`, so the same settings and seed give the same images everywhere (how a seed maps
to images: `batches.py`).

A pipeline is three pieces that do not know each other: the network (with its run-time wrappers), the noise
process of its `diffusion.kind` (`diffusion/process.py`: where sampling starts, how a sampler walks back, how a
known region is held) and the space samples live in (`sample_space.py`: pixels, or the latents of the
autoencoder the model was trained on, hash-checked on load). An autoencoder itself samples nothing: `load` gives
an `AutoencoderPreview` for it, whose `sample` shows its reconstructions of test digits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_diffusion import assets, runtime
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.batches import batches, cycled_labels, initial_noise, progress_bar, with_progress  # noqa: F401 - initial_noise re-exported
from mnist_diffusion.config import RunConfig, SampleConfig
from mnist_diffusion.data import to_float, to_uint8
from mnist_diffusion.device import resolve_device
from mnist_diffusion.diffusion.process import make_process
from mnist_diffusion.diffusion.samplers import chain, check_resample
from mnist_diffusion.errors import UserError
from mnist_diffusion.inpainting import (  # noqa: F401 - INPAINT_METHODS and half_mask re-exported
    INPAINT_METHODS,
    INPAINT_MIN_STEPS,
    check_inpainting_input,
    check_inpainting_options,
    half_mask,
    holding_known_region,
)
from mnist_diffusion.latent import FrozenAutoencoder
from mnist_diffusion.models import build_model
from mnist_diffusion.precision import PrecisionChoice, resolve_precision
from mnist_diffusion.reconstructions import AutoencoderPreview
from mnist_diffusion.sample_result import SampleResult
from mnist_diffusion.sample_settings import MODEL_DEFAULT, resolve_settings
from mnist_diffusion.sample_space import make_space

StepCallback = Callable[[dict], "torch.Tensor | None"]


class Pipeline:
    """A network with its config, ready to sample: `pipe.sample(n, labels=..., seed=...)`.

    config: the `RunConfig` it was trained with (its `sample` section holds the default sampler settings);
    net: the network in eval mode; device; path: the file it came from (None if built in memory).
    precision: 'fp32' (default: the net as given), 'bf16' or 'auto' (`precision.resolve_precision`); in bf16
    the network and a latent model's autoencoder run in bf16 and hand back fp32, so schedule, sampler state and
    images stay fp32; `pipe.precision` says which and why. compile: run the network under torch.compile
    (`compiled.CompiledNetwork`); the first batch of each size pays the compile (seconds).
    """

    def __init__(
        self,
        config: RunConfig,
        net: nn.Module,
        device: str | torch.device = "cpu",
        path: Path | None = None,
        name: str | None = None,
        autoencoder: FrozenAutoencoder | None = None,
        precision: str | PrecisionChoice = "fp32",
        compile: bool = False,
    ):
        self.config, self.net, self.device = config, net, torch.device(device)
        self.path, self.name = path, name or (str(path) if path else config.recipe)
        self.precision = resolve_precision(precision, self.device, "sample")
        self.process = make_process(config.diffusion)
        self.space = make_space(config, self.device, self.precision, path, self.name, autoencoder)
        self._fp32_weights = None  # the weights as loaded, for save(), while the net runs in bf16
        if self.precision.precision == "bf16":
            self._fp32_weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        self.compiled = bool(compile)
        self.guide: Pipeline | None = None  # autoguidance: see `autoguide`
        self._bind_forward()

    def _bind_forward(self) -> None:
        """`network`, what the samplers call: `net` in the pipeline's precision, under torch.compile if asked
        (`runtime.wrap`). `net` itself holds the weights (bf16 ones when the pipeline runs in bf16)."""
        self.network = runtime.wrap(self.net, self.precision, self.compiled)

    # ---- what it is -------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """10 for a class-conditional model (labels 0-9), 0 for an unconditional one."""
        return self.config.model.num_classes

    @property
    def value_range(self) -> str:
        return self.config.data.value_range

    @property
    def autoencoder(self) -> FrozenAutoencoder | None:
        """A latent model's frozen autoencoder (loaded and hash-checked on first use); None for pixel models."""
        return self.space.autoencoder

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape the sampler works in: (C, 7, 7) latents, or (C, 28, 28) pixels."""
        return self.space.shape

    @property
    def default_batch_size(self) -> int:
        """Images per batch when `sample` is not told. On the CPU 64 for a guided model, whose network sees each
        image twice, so that each layer's activations stay in cache, and 256 for a distilled student, one row
        per image (the `sampling` suite in docs/results.md measures both); 1000 on accelerators."""
        if self.device.type != "cpu":
            return 1000
        return 256 if self.config.model.guidance_input else 64

    @property
    def inpaint_steps(self) -> int:
        """The sampler steps `inpaint` takes when not told: the model's sampling steps, but at least
        `INPAINT_MIN_STEPS` -- every step is a chance to fit the filled part to the known one. A distilled
        student keeps its own few steps: speed is what it is for."""
        steps = self.config.sample.steps
        return steps if self.config.distill is not None else max(steps, INPAINT_MIN_STEPS)

    def __repr__(self) -> str:
        s = self.config.sample
        what = f"{self.num_classes} classes" if self.num_classes else "unconditional"
        guide = f" by {self.guide.name}" if self.guide is not None else ""
        return (
            f"Pipeline({self.name!r}: {self.config.recipe} {self.config.model.kind}, {what}, "
            f"{s.sampler} {s.steps} steps, guidance {s.guidance:g}{guide}, {self.device})"
        )

    # ---- moving and saving --------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> Pipeline:
        """Move the network (and autoencoder) to `device`; returns self."""
        self.device = resolve_device(str(device)) if str(device) == "auto" else torch.device(device)
        self.net.to(self.device)
        runtime.sampling_layout(self.net, self.device)
        self._bind_forward()  # compiled graphs are per device
        self.space.to(self.device)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the weights with their config as a model file (a directory gets `model.safetensors`); returns it.
        `load(path)` reads it back to the same pipeline; a latent model's file names its autoencoder as before."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / ckpt.MODEL_FILE
        ckpt.save_model(path, self.config, self._fp32_weights or self.net.state_dict())
        return path

    def export_onnx(self, path: str | Path, check: bool = True):
        """The fp32 network as an ONNX file, checked against PyTorch (`export.onnx.export_onnx`; the export extra)."""
        from mnist_diffusion.export.onnx import export_onnx

        return export_onnx(self, path, check)

    # ---- sampling -----------------------------------------------------------------------------------------
    def settings(
        self, sampler=None, steps=None, guidance=None, guidance_interval=MODEL_DEFAULT, **more
    ) -> SampleConfig:
        """The model's sample settings with the given ones (and `more`: spacing, eta, shift) replaced, checked."""
        return resolve_settings(
            self.config, self.name, guidance_interval, sampler=sampler, steps=steps, guidance=guidance, **more
        )

    def autoguide(self, guide: Pipeline | None) -> Pipeline:
        """Guide with a weaker model of the same kind instead of the unconditional pass (autoguidance, Karras et
        al. 2024): `guide` is a pipeline of an earlier or smaller run of this model's noise process and sample
        space, on the same device; None goes back to classifier-free guidance. Returns self."""
        if guide is not None:
            mine, theirs = self.config, guide.config
            process = [
                (c.diffusion.kind, c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.prediction)
                for c in (mine, theirs)
            ]  # what sampling reads; how each was trained may differ
            if (
                process[0] != process[1]
                or self.sample_shape != guide.sample_shape
                or mine.latent != theirs.latent
                or not guide.num_classes
                or mine.model.guidance_input
                or theirs.model.guidance_input
                or guide.device != self.device
            ):
                raise UserError(
                    f"{guide.name} cannot guide {self.name}: autoguidance needs a guided class-conditional "
                    "model of the same noise process, sample space and device."
                )
        self.guide = guide
        return self

    def denoiser(
        self,
        labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
    ):
        """The network as a denoiser D(z_t, t) -> (z0, eps), with this conditioning (and any `autoguide`) bound in."""
        return self.process.denoiser(
            self.network, labels, guidance, guidance_interval, None if self.guide is None else self.guide.network
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> images in the data range: latents are decoded, pixels returned as they are."""
        return self.space.decode(z)

    def _in_image_space(self, callback: StepCallback | None) -> StepCallback | None:
        """A user's callback as the sampler calls it: x_t, x0 and denoised decoded to images, z_t and z0 added."""
        if callback is None:
            return None

        def step(info: dict) -> torch.Tensor | None:
            z_t, z0 = info["x_t"], info["x0"]
            x_t, x0 = self.decode(torch.cat([z_t, z0])).chunk(2)  # one decoder call: mostly per-call overhead
            return callback({**info, "x_t": x_t, "x0": x0, "denoised": x0, "z_t": z_t, "z0": z0})

        return step

    @torch.inference_mode()
    def sample_batch(
        self,
        z_T: torch.Tensor,
        labels: torch.Tensor | None,
        settings: SampleConfig,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        edit: StepCallback | None = None,
        resample: int = 1,
    ) -> torch.Tensor:
        """Float images (B, C, 28, 28) in the data range from starting noise z_T (B, *sample_shape).

        `callback` gets the samplers' step dict with x_t, x0 and denoised in image space (decoded for latent
        models) plus z_t and z0, the tensors the sampler works on (latents, or the same pixels), and may
        return a replacement for z_t. `edit` is a sampler-level callback in the sampler's own space, run before
        `callback` (inpainting's known region). resample > 1 walks the grid with RePaint's resampling.
        """
        step = chain(edit, self._in_image_space(callback))
        z = self.process.sample(
            self.network,
            z_T,
            settings,
            labels,
            generator,
            step,
            resample,
            None if self.guide is None else self.guide.network,
        )
        return self.decode(z)

    def _draw(self, n, labels, settings, seed, batch_size, progress, callback, desc, per_batch=None, resample=1):
        """Float samples (n, C, 28, 28) batch by batch. Inpainting passes `per_batch(batch)` -> (edit, finish):
        the sampler-level callback that holds the batch's known region, and what makes the final images."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise UserError(f"seed must be a whole number >= 0, got {seed!r}.")
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise UserError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        bar = progress_bar(n, batch_size, settings.steps * resample, progress, desc)
        out = []
        for batch in batches(n, batch_size, self.sample_shape, self.process.noise, seed, labels, self.device):
            edit, finish = per_batch(batch) if per_batch is not None else (None, None)
            step = with_progress(callback, bar, batch.start)
            x = self.sample_batch(batch.z_T, batch.labels, settings, batch.generator, step, edit, resample)
            out.append((finish(x.float()) if finish is not None else x.float()).cpu())
        bar.close()
        return torch.cat(out)

    def _result(self, samples: torch.Tensor, labels, settings: SampleConfig, started: float, **info) -> SampleResult:
        info = {
            "model": self.name,
            "process": self.config.diffusion.kind,
            **dataclasses.asdict(settings),
            **info,
            "precision": self.precision.precision,
            "precision_reason": self.precision.reason,
            "compiled": self.compiled,
            "seconds": time.perf_counter() - started,
        }
        return SampleResult(to_uint8(samples, self.value_range), labels, samples, self.value_range, info)

    def sample(
        self,
        n: int = 64,
        labels=None,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        progress: bool = False,
        callback: StepCallback | None = None,
        spacing: str | None = None,
        eta: float | None = None,
        guidance_interval=MODEL_DEFAULT,
        shift: float | None = None,
        batch_size: int | None = None,
    ) -> SampleResult:
        """Draw n digits. Settings left out come from the model (its config's `sample` section).

        labels: None (a conditional model then draws 0-9 in turn), a digit, a spec like '0-9' or '3,5,8', or a
        sequence of digits; they cycle, so n = 10000 with '0-9' gives 1,000 of each. guidance: the
        classifier-free guidance scale (1 = none); guidance_interval: (low, high) noise levels where it
        applies, None = every step. shift: a flow model's timestep shift (1 = a uniform grid). seed: image i
        starts from noise seeded with seed + i. progress: a tqdm
        bar per sampler step (steps x batches; in notebooks too). callback: see `sample_batch`.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UserError(f"n must be a whole number of images >= 1, got {n!r}.")
        started = time.perf_counter()
        settings = self.settings(sampler, steps, guidance, guidance_interval, spacing=spacing, eta=eta, shift=shift)
        all_labels = cycled_labels(labels, self.num_classes, n, every_class=True)
        samples = self._draw(n, all_labels, settings, seed, batch_size, progress, callback, "sampling")
        return self._result(samples, all_labels, settings, started, seed=seed, n=n)

    def inpaint(
        self,
        images: np.ndarray,
        mask: np.ndarray,
        labels=None,
        guidance: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        resample: int = 1,
        method: str = "project",
        seed: int = 0,
        progress: bool = False,
        callback: StepCallback | None = None,
        batch_size: int | None = None,
    ) -> SampleResult:
        """Complete digits of which only some pixels are known.

        images: uint8 (N, 28, 28); mask: (N, 28, 28), nonzero where the pixel is known (e.g. `half_mask`). The
        known pixels come back exactly; the others are filled so that the whole is a digit -- of `labels` if
        given (then guided as `sample` is), else of whatever class the known part suggests.

        steps: default `inpaint_steps`. method: how the known region enters every sampler step
        (`inpainting.holding_known_region`): 'project' pastes the known pixels into the step's x0 estimate,
        'replace' puts the known region of x_t back on the forward process (Song et al. 2021). resample = r > 1
        adds RePaint's resampling (Lugmayr et al. 2022): every step taken r times with DDIM steps (eta 1),
        about r times the network evaluations. Which is better: the `quality.inpainting` suite in docs/results.md.
        """
        images, mask = check_inpainting_input(images, mask)
        check_inpainting_options(resample, method, labels, guidance)
        started = time.perf_counter()
        settings = self.settings(
            sampler, self.inpaint_steps if steps is None else steps, guidance if labels is not None else 1.0
        )
        if resample > 1:
            check_resample(settings.sampler, self.config.diffusion.kind)
        all_labels = cycled_labels(labels, self.num_classes, len(images), every_class=False)

        def per_batch(batch):
            rows = slice(batch.start, batch.start + batch.size)
            known = to_float(images[rows], self.value_range).to(self.device)
            m = torch.from_numpy(mask[rows]).unsqueeze(1).to(self.device, known.dtype)
            edit = holding_known_region(self.process, self.space, known, m, batch.generator, method)
            return edit, lambda x: m * known + (1 - m) * x  # the known pixels, exactly

        n = len(images)
        samples = self._draw(
            n, all_labels, settings, seed, batch_size, progress, callback, "inpainting", per_batch, resample
        )
        return self._result(samples, all_labels, settings, started, method=method, resample=resample, seed=seed, n=n)


def load(
    name_or_path=None, device="cpu", precision: str = "auto", compile: bool = False
) -> Pipeline | AutoencoderPreview:
    """A `Pipeline` for a packaged model ('ddpm-cond', 'ldm'; None = 'ddpm-cond'), a run directory or a
    checkpoint file (a training state samples with its EMA weights); an `AutoencoderPreview` for an autoencoder.
    device: 'cpu', 'cuda', 'mps' or 'auto'. precision: 'auto' (bf16 on CPUs with bf16 matrix units, else fp32;
    `pipe.precision` says why), 'fp32', 'bf16'. compile: run the network under torch.compile (see `Pipeline`)."""
    device = resolve_device(str(device)) if isinstance(device, str) else torch.device(device)
    precision = resolve_precision(precision, device, "sample")  # a bad value is refused before any file is read
    path = ckpt.resolve_model_path(name_or_path)
    loaded = ckpt.load_checkpoint(path, device)
    net = ckpt.load_weights(build_model(loaded.config.model).to(device), ckpt.model_weights(loaded), path)
    net.eval()
    name = assets.DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if loaded.config.model.kind == "autoencoder":
        return AutoencoderPreview(loaded.config, net, device, path, name)
    runtime.sampling_layout(net, device)
    pipe = Pipeline(loaded.config, net, device, path, name=name, precision=precision, compile=compile)
    _ = pipe.autoencoder  # a latent model: refuse a missing or different autoencoder now, not after sampling
    return pipe


def from_training(cfg: RunConfig, weights: dict[str, torch.Tensor], device: torch.device) -> Pipeline:
    """A pipeline over weights held in memory (the training loop's in-run check)."""
    net = build_model(cfg.model).to(device)
    net.load_state_dict(weights)
    return Pipeline(cfg, net.eval(), device, name=f"{cfg.recipe} (training)")
