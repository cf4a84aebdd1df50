"""A model loaded for sampling -- `load(name_or_path)` -> `Pipeline` -> `pipe.sample(n)` -> `SampleResult`.

The CLI's `sample`, `evaluate` and `figures`, the training loop's in-run check and the notebooks all sample
through `Pipeline.sample`, so the same settings and seed give the same images everywhere.

Reproducibility: image i of a call with `seed=S` starts from noise drawn with seed S + i, so deterministic
samplers (DDIM with eta = 0, DPM-Solver++, Heun, the tutorial's) give the same image i whatever `n` and the
batch size. Stochastic samplers (DDPM ancestral, DDIM with eta > 0) draw their per-step noise per batch, so
there the whole call is reproducible for a given batch size.

Latent-diffusion models (config `latent` set) sample (C, 7, 7) latents and decode them with the autoencoder the
model was trained on (hash-checked on load). An autoencoder has nothing to sample: its "samples" are its
reconstructions of test digits (image i is test image S + i), so `sample` and `evaluate` show how well it
reconstructs.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from mnist_diffusion import assets
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.compiled import CompiledNetwork
from mnist_diffusion.config import ConfigError, RunConfig, SampleConfig, check_sampling, from_dict, to_dict
from mnist_diffusion.data import load_split, to_float, to_uint8
from mnist_diffusion.device import resolve_device
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.inpaint import projection, replacement, sample_repaint
from mnist_diffusion.diffusion.samplers import chain
from mnist_diffusion.diffusion.samplers import sample as run_sampler
from mnist_diffusion.diffusion.schedule import karras_timesteps, make_schedule, timestep_grid
from mnist_diffusion.diffusion.tutorial import corrupt, sample_tutorial
from mnist_diffusion.errors import UserError
from mnist_diffusion.files import atomic_write
from mnist_diffusion.images import caption, grid_image, labelled_grid, write_npz
from mnist_diffusion.latent import FrozenAutoencoder, decode_latents, encode_latents, load_autoencoder, reconstruct
from mnist_diffusion.models import build_model
from mnist_diffusion.precision import PrecisionChoice, resolve_precision, run_network_in

INPAINT_METHODS = ("project", "replace")
DEFAULT = "default"  # guidance_interval=DEFAULT: the model's own setting (None means: guide at every step)
StepCallback = Callable[[dict], "torch.Tensor | None"]


@dataclass
class SampleResult:
    """What `Pipeline.sample` returns.

    images: uint8 (n, 28, 28), 0 = black background, 255 = white stroke (MNIST's convention).
    labels: int64 (n,) requested classes, or None for an unconditional model.
    settings: the sampler settings, seed and model that made them, and the seconds it took.
    """

    images: np.ndarray
    labels: np.ndarray | None
    samples: torch.Tensor = field(repr=False)  # float (n, C, 28, 28) in the model's data range, before rounding
    value_range: str = "signed"
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: slice) -> "SampleResult":
        """A slice of the result, e.g. out[:16]."""
        if not isinstance(index, slice):
            raise TypeError("index a SampleResult with a slice (out[:16]); out.images[i] is image i")
        labels = None if self.labels is None else self.labels[index]
        return SampleResult(self.images[index], labels, self.samples[index], self.value_range, self.settings)

    def tensor(self) -> torch.Tensor:
        """The samples as float (n, C, 28, 28) in the model's data range ([-1, 1] 'signed', [0, 1] 'unit')."""
        return self.samples

    def _nrow(self, nrow: int | None) -> int | None:
        """10 per row when the labels cycle through ten digits, so each column is one digit."""
        if nrow is None and self.labels is not None and len(self) % 10 == 0 and len(np.unique(self.labels)) == 10:
            return 10
        return nrow

    def grid(self, nrow: int | None = None, scale: int = 2) -> Image.Image:
        """A PIL image of the digits, `nrow` per row (default: one column per digit when labels cycle 0-9)."""
        return grid_image(self.images, nrow=self._nrow(nrow), scale=scale)

    def _repr_png_(self) -> bytes:  # Jupyter shows a result as its grid
        buffer = io.BytesIO()
        self.grid().save(buffer, format="PNG")
        return buffer.getvalue()

    def labelled_grid(self, nrow: int | None = None, scale: int = 2) -> Image.Image:
        """The grid with the digit asked for above each column (when every column holds one digit) and a caption
        line naming the model, sampler, steps, guidance and seed."""
        nrow = self._nrow(nrow)
        per_row = nrow or int(np.ceil(np.sqrt(len(self))))
        columns = None
        if self.labels is not None and len(self) >= per_row:
            first = self.labels[:per_row]
            rows = [self.labels[i:i + per_row] for i in range(0, len(self) - len(self) % per_row, per_row)]
            if all(np.array_equal(r, first) for r in rows):
                columns = [f"digit {d}" if per_row <= 10 else str(d) for d in first]
        return Image.fromarray(labelled_grid(self.images, per_row, col_labels=columns, caption=caption(self.settings),
                                             scale=scale))

    def save(self, path: str | Path, nrow: int | None = None) -> Path:
        """Write the labelled grid (`.png`, see `labelled_grid`) or the arrays (`.npz`: images uint8 (n, 28, 28)
        [+ labels int64 (n,)])."""
        path = Path(path)
        if path.suffix == ".npz":
            return write_npz(path, self.images, self.labels)
        if path.suffix != ".png":
            raise UserError(f"{path}: a sample result is saved as .png (a grid) or .npz (the arrays).")
        image = self.labelled_grid(nrow)
        return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def parse_labels(spec, num_classes: int) -> list[int] | None:
    """None | '0-9' | '7' | '3,5,8' | 7 | [3, 5, 8] -> a list of class indices, checked against num_classes.

    >>> parse_labels("0-3,7", 10)
    [0, 1, 2, 3, 7]
    >>> parse_labels(None, 10) is None
    True
    """
    if spec is None or (isinstance(spec, str) and spec.strip() == ""):
        return None
    if num_classes == 0:
        raise UserError(f"labels {spec!r} were given, but this model is unconditional; leave the labels out.")
    if isinstance(spec, str):
        out: list[int] = []
        try:
            for part in spec.split(","):
                part = part.strip()
                if "-" in part[1:]:
                    lo, hi = part.split("-", 1)
                    out.extend(range(int(lo), int(hi) + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise UserError(f"labels {spec!r} are not understood; write e.g. 0-9, 7 or 3,5,8.") from None
    else:
        values = np.atleast_1d(np.asarray(spec))
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
            raise UserError(f"labels must be whole class numbers, got {values.dtype} of shape {values.shape}.")
        out = [int(v) for v in values]
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad or not out:
        raise UserError(f"labels {spec!r} name class {bad[0] if bad else '(none)'}; classes run from 0 to "
                        f"{num_classes - 1}.")
    return out


def initial_noise(n: int, shape: tuple[int, ...], seed: int, kind: str, device: torch.device, offset: int = 0):
    """Per-image starting noise (n, *shape): image i from its own generator seeded with seed + offset + i."""
    xs = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + offset + i)
        xs.append(torch.rand(shape, generator=g) if kind == "uniform" else torch.randn(shape, generator=g))
    return torch.stack(xs).to(device)


# Completing digits wants more sampler steps than drawing them: with the top half of 1,000 test digits known and
# no label, `ddpm-cond`'s projected completions are read as the right digit 47.5% of the time at its 8 sampling
# steps, 62.8% at 20, 69.8% at 50; `ldm` is level from 20 to 50 (benchmarks/results/inpainting.md). 20 takes most of
# the gain at 2.5x the cost of 8 steps. See `Pipeline.inpaint_steps`.
INPAINT_MIN_STEPS = 20


def sampling_layout(net: nn.Module, device: str | torch.device) -> nn.Module:
    """Put a network's weights in the memory layout that samples fastest on `device`, in place.

    NHWC (channels_last) lets oneDNN on the CPU and cuDNN on CUDA pick faster convolution kernels for inference
    (benchmarks/results/sampling_speed.md); other devices keep NCHW.
    """
    if torch.device(device).type in ("cpu", "cuda"):
        net.to(memory_format=torch.channels_last)
    return net


class Pipeline:
    """A network with its config, ready to sample: `pipe.sample(n, labels=..., seed=...)`.

    config: the `RunConfig` it was trained with (its `sample` section holds the default sampler settings);
    net: the network in eval mode; device; path: the file it came from (None if built in memory).
    precision: 'fp32' (default: the net as given), 'bf16' or 'auto' (`precision.resolve_precision`); bf16
    casts `net`'s weights to bf16 in place, and the net then takes and returns fp32 (x_t is cast at its
    boundary), so schedule, sampler state and images stay fp32; a latent model's autoencoder, when the pipeline
    loads it, decodes in bf16 too (and returns fp32). `pipe.precision` says which and why; an autoencoder model
    itself always reconstructs in fp32. compile: run the network under torch.compile (`compiled.CompiledNetwork`);
    the first batch of each size pays the compile (seconds), and the rest run faster where elementwise layers
    bound the network (bf16 on CPUs; benchmarks/results/precision.md).
    """

    def __init__(self, config: RunConfig, net: nn.Module, device: str | torch.device = "cpu",
                 path: Path | None = None, name: str | None = None, autoencoder: FrozenAutoencoder | None = None,
                 precision: str | PrecisionChoice = "fp32", compile: bool = False):
        self.config, self.net, self.device = config, net, torch.device(device)
        self.path, self.name = path, name or (str(path) if path else config.recipe)
        self._autoencoder = autoencoder
        self.precision = resolve_precision(precision, self.device, "sample")
        if config.model.kind == "autoencoder" and self.precision.precision != "fp32":
            self.precision = PrecisionChoice("fp32", "an autoencoder reconstructs in fp32")
        self._fp32_weights = None  # the weights as loaded, for save(), while the net runs in bf16
        if self.precision.precision == "bf16":
            self._fp32_weights = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
            run_network_in(net, torch.bfloat16)
        self.compiled = bool(compile)
        self.guide: Pipeline | None = None  # autoguidance: see `autoguide`
        self._bind_forward()

    def _bind_forward(self) -> None:
        """What the samplers call: the network, or it under torch.compile."""
        self._forward = CompiledNetwork(self.net) if self.compiled else self.net

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
        if self._autoencoder is None and self.config.latent is not None:
            self._autoencoder = load_autoencoder(self.config.latent, self.device, str(self.path or self.name))
            if self.precision.precision == "bf16":
                # In bf16 the decoder ran 1.75x as fast on an AVX-512-BF16 EPYC, and a bf16 `ldm` draw 1.04x,
                # images 0.18/255 apart on average (benchmarks/results/latent_decode.md). Layout as loaded (NCHW):
                # neither layout was faster across runs there.
                self._autoencoder.net.to(torch.bfloat16)
        return self._autoencoder

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape the sampler works in: (C, 7, 7) latents, or (C, 28, 28) pixels."""
        cfg = self.config
        return tuple(cfg.latent.shape) if cfg.latent is not None else (cfg.model.in_channels, 28, 28)

    @property
    def default_batch_size(self) -> int:
        """Images per batch when `sample` is not told. On the CPU: 64 for a guided model, whose network sees each
        image twice (128 rows), where each layer's activations then stay in cache (benchmarks/results/
        sampling_speed.md; for `ldm` too, eager or compiled: compiled_sampling.md); 256 for a distilled student,
        one row per image: on an AVX-512-BF16 EPYC `ldm-fast` drew 1.65x the images/s of batch 64 there and
        `ddpm-cond-fast` 1.05x (benchmarks/results/student_batch.md). 1000 on accelerators."""
        if self.device.type != "cpu":
            return 1000
        return 256 if self.config.model.guidance_input else 64

    @property
    def inpaint_steps(self) -> int:
        """The sampler steps `inpaint` takes when not told: the model's sampling steps, but at least
        `INPAINT_MIN_STEPS` (20) -- every step is a chance to fit the filled part to the known one, and completions
        keep improving with steps well past where plain samples stop. A distilled student keeps its own few steps:
        speed is what it is for (at 20 steps its teacher completes better in the same time)."""
        steps = self.config.sample.steps
        return steps if self.config.distill is not None else max(steps, INPAINT_MIN_STEPS)

    def __repr__(self) -> str:
        s = self.config.sample
        what = f"{self.num_classes} classes" if self.num_classes else "unconditional"
        guide = f" by {self.guide.name}" if self.guide is not None else ""
        return (f"Pipeline({self.name!r}: {self.config.recipe} {self.config.model.kind}, {what}, "
                f"{s.sampler} {s.steps} steps, guidance {s.guidance:g}{guide}, {self.device})")

    # ---- moving and saving --------------------------------------------------------------------------------
    def to(self, device: str | torch.device) -> "Pipeline":
        """Move the network (and autoencoder) to `device`; returns self."""
        self.device = resolve_device(str(device)) if str(device) == "auto" else torch.device(device)
        self.net.to(self.device)
        sampling_layout(self.net, self.device)
        self._bind_forward()  # compiled graphs are per device
        if self._autoencoder is not None:
            self._autoencoder.to(self.device)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the weights with their config as a model file (a directory gets `model.safetensors`); returns it.

        `load(path)` reads it back to the same pipeline; a latent model's file names its autoencoder as before.
        """
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / ckpt.MODEL_FILE
        ckpt.save_model(path, self.config, self._fp32_weights or self.net.state_dict())
        return path

    # ---- sampling -----------------------------------------------------------------------------------------
    def settings(self, sampler=None, steps=None, guidance=None, spacing=None, eta=None,
                 guidance_interval=DEFAULT) -> SampleConfig:
        """The model's sample settings with the given ones replaced, checked like any config."""
        data = to_dict(self.config.sample)
        given = {"sampler": sampler, "steps": steps, "guidance": guidance, "spacing": spacing, "eta": eta}
        data.update({k: v for k, v in given.items() if v is not None})
        if guidance_interval != DEFAULT:
            data["guidance_interval"] = None if guidance_interval is None else list(guidance_interval)
        if not self.num_classes:
            data["guidance"] = 1.0 if guidance is None else data["guidance"]
        try:
            resolved = from_dict(SampleConfig, data, "sample")
            check_sampling(resolved, self.config.diffusion.kind)
        except ConfigError as e:
            raise UserError(f"{e}") from None
        if resolved.guidance_interval is not None and self.config.model.guidance_input:
            raise UserError(f"{self.name} has its guidance distilled in, so a guidance interval does not apply; "
                            "leave the guidance interval out.")
        return resolved

    def autoguide(self, guide: "Pipeline | None") -> "Pipeline":
        """Guide with a weaker model of the same kind instead of the unconditional pass (autoguidance, Karras et
        al. 2024): `guide` is a pipeline of an earlier or smaller run of this model's noise process and sample
        space, on the same device; None goes back to classifier-free guidance. Returns self."""
        if guide is not None:
            mine, theirs = self.config, guide.config
            process = [(c.diffusion.kind, c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.prediction)
                       for c in (mine, theirs)]  # what sampling reads; how each was trained may differ
            if (process[0] != process[1] or self.sample_shape != guide.sample_shape
                    or mine.latent != theirs.latent or not guide.num_classes or mine.model.guidance_input
                    or theirs.model.guidance_input or guide.device != self.device):
                raise UserError(f"{guide.name} cannot guide {self.name}: autoguidance needs a guided class-conditional "
                                "model of the same noise process, sample space and device.")
        self.guide = guide
        return self

    def denoiser(self, labels: torch.Tensor | None = None, guidance: float = 1.0,
                 guidance_interval: tuple[float, float] | None = None) -> Denoiser:
        """The network as a denoiser D(z_t, t) -> (z0, eps), with this conditioning (and any `autoguide`) bound in."""
        d = self.config.diffusion
        return Denoiser(self._forward, make_schedule(d.schedule, d.timesteps), d.prediction, labels=labels,
                        guidance=guidance, guidance_interval=guidance_interval,
                        guide=None if self.guide is None else self.guide._forward)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> images in the data range: latents are decoded, pixels returned as they are."""
        if self.config.latent is None:
            return z
        return decode_latents(self.autoencoder, z, self.config.latent.scale)

    def _in_image_space(self, callback: StepCallback | None) -> StepCallback | None:
        """A user's callback as the sampler calls it: x_t, x0 and denoised decoded to images, z_t and z0 added."""
        if callback is None:
            return None

        def step(info: dict) -> torch.Tensor | None:
            z_t, z0 = info["x_t"], info["x0"]
            # Latents: both decoded in one call; at a page's one digit a decoder call is mostly per-call overhead.
            x_t, x0 = (z_t, z0) if self.config.latent is None else self.decode(torch.cat([z_t, z0])).chunk(2)
            return callback({**info, "x_t": x_t, "x0": x0, "denoised": x0, "z_t": z_t, "z0": z0})

        return step

    @torch.inference_mode()
    def sample_batch(self, z_T: torch.Tensor, labels: torch.Tensor | None, settings: SampleConfig,
                     generator: torch.Generator | None = None, callback: StepCallback | None = None,
                     edit: StepCallback | None = None, resample: int = 1) -> torch.Tensor:
        """Float images (B, C, 28, 28) in the data range from starting noise z_T (B, *sample_shape).

        `callback` gets the samplers' step dict with x_t, x0 and denoised in image space (decoded for latent
        models) plus z_t and z0, the tensors the sampler works on (latents, or the same pixels), and may
        return a replacement for z_t. `edit` is a sampler-level callback in the sampler's own space, run before
        `callback` (inpainting's replacement). resample > 1 walks the grid with RePaint's resampling.
        """
        step = chain(edit, self._in_image_space(callback))
        if settings.sampler == "tutorial":
            return sample_tutorial(self._forward, z_T, settings.steps, callback=step)
        interval = None if settings.guidance_interval is None else tuple(settings.guidance_interval)
        denoiser = self.denoiser(labels, settings.guidance, interval)
        if resample > 1:
            grid = timestep_grid(denoiser.schedule.timesteps, settings.steps, settings.spacing) \
                if settings.spacing != "karras" else karras_timesteps(denoiser.schedule, settings.steps)
            z = sample_repaint(denoiser, z_T, grid, resample, eta=1.0, generator=generator, callback=step)
        else:
            z = run_sampler(settings.sampler, denoiser, z_T, settings.steps, spacing=settings.spacing,
                            generator=generator, callback=step, eta=settings.eta)
        return self.decode(z)

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
        guidance_interval=DEFAULT,
        batch_size: int | None = None,
    ) -> SampleResult:
        """Draw n digits. Settings left out come from the model (its config's `sample` section).

        labels: None (a conditional model then draws 0-9 in turn), a digit, a spec like '0-9' or '3,5,8', or a
        sequence of digits; they cycle, so n = 10000 with '0-9' gives 1,000 of each. guidance: the
        classifier-free guidance scale (1 = none); guidance_interval: (low, high) noise levels where it
        applies, None = every step. seed: image i starts from noise seeded with seed + i. progress: a tqdm
        bar per sampler step (steps x batches; in notebooks too). callback: see `sample_batch`.
        """
        if not isinstance(n, int) or n < 1:
            raise UserError(f"n must be a whole number of images >= 1, got {n!r}.")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise UserError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        if not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be a whole number >= 0, got {seed!r}.")
        started = time.perf_counter()
        cfg = self.config
        if cfg.model.kind == "autoencoder":
            if labels is not None or guidance not in (None, 1.0):
                raise UserError("An autoencoder reconstructs test digits instead of sampling; leave out labels "
                                "and guidance.")
            return self._reconstructions(n, seed, started)
        settings = self.settings(sampler, steps, guidance, spacing, eta, guidance_interval)
        classes = parse_labels(labels, self.num_classes)
        if classes is None and self.num_classes:
            classes = list(range(self.num_classes))  # a conditional model: every class in turn by default
        all_labels = None if classes is None else np.array([classes[i % len(classes)] for i in range(n)],
                                                           dtype=np.int64)
        batch_size = batch_size or self.default_batch_size
        kind = "uniform" if cfg.diffusion.kind == "tutorial" else "gaussian"
        starts = range(0, n, batch_size)
        bar = tqdm(total=len(starts) * settings.steps, disable=not progress, unit="step", desc="sampling")
        out = []
        for start in starts:
            b = min(batch_size, n - start)
            z_T = initial_noise(b, self.sample_shape, seed, kind, self.device, offset=start)
            lab = None if all_labels is None else torch.from_numpy(all_labels[start:start + b]).to(self.device)
            g = torch.Generator(device=self.device).manual_seed(seed * 7919 + start)
            out.append(self.sample_batch(z_T, lab, settings, g, _with_progress(callback, bar, start)).float().cpu())
        bar.close()
        samples = torch.cat(out)
        info = {"model": self.name, **dataclasses.asdict(settings), "seed": seed, "n": n,
                "precision": self.precision.precision, "precision_reason": self.precision.reason,
                "compiled": self.compiled, "seconds": time.perf_counter() - started}
        return SampleResult(to_uint8(samples, self.value_range), all_labels, samples, self.value_range, info)

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

        images: uint8 (N, 28, 28); mask: (N, 28, 28), nonzero where the pixel is known. The known pixels come
        back exactly; the others are filled so that the whole is a digit -- of `labels` if given (then guided as
        `sample` is), else of whatever class the known part suggests.

        steps: default `inpaint_steps` (at least 20). method: how the known region enters every sampler step
        (diffusion/inpaint.py). 'project' pastes the known pixels into the step's x0 estimate and rebuilds x_t
        around it (for a latent model: decode, paste, encode); 'replace' puts the known region of x_t back on the forward process with fresh noise (Song et
        al. 2021; for a latent model in latent space, on the cells whose 4x4 pixels are all known). resample = r
        > 1 adds RePaint's resampling (Lugmayr et al. 2022): every step is taken r times with DDIM steps (eta 1),
        about r times the network evaluations. Which is better here: benchmarks/results/inpainting.md.
        """
        images, mask = check_inpainting_input(images, mask)
        if not isinstance(resample, int) or resample < 1:
            raise UserError(f"resample must be a whole number >= 1, got {resample!r}.")
        if method not in INPAINT_METHODS:
            raise UserError(f"method must be one of {', '.join(INPAINT_METHODS)}, got {method!r}.")
        cfg = self.config
        if cfg.model.kind == "autoencoder":
            raise UserError("An autoencoder does not sample, so it cannot complete digits; use a diffusion model.")
        if labels is None and guidance not in (None, 1.0):
            raise UserError(f"guidance {guidance} needs labels to guide towards; give labels or leave guidance out.")
        if steps is None:
            steps = self.inpaint_steps
        settings = self.settings(sampler, steps, guidance if labels is not None else 1.0)
        if resample > 1 and settings.sampler in ("tutorial", "heun"):
            raise UserError(f"RePaint resampling (resample > 1) steps with DDIM; the {settings.sampler!r} sampler "
                            "cannot resample: use resample=1, or sampler ddim / ddpm / dpmpp_2m.")
        n = len(images)
        classes = parse_labels(labels, self.num_classes)
        all_labels = None if classes is None else np.array([classes[i % len(classes)] for i in range(n)], np.int64)
        batch_size = batch_size or self.default_batch_size
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        started = time.perf_counter()
        kind = "uniform" if cfg.diffusion.kind == "tutorial" else "gaussian"
        starts = range(0, n, batch_size)
        per_batch = settings.steps * (resample if resample > 1 else 1)
        bar = tqdm(total=len(starts) * per_batch, disable=not progress, unit="step", desc="inpainting")
        out = []
        for start in starts:
            b = min(batch_size, n - start)
            known = to_float(images[start:start + b], self.value_range).to(self.device)
            m = torch.from_numpy(mask[start:start + b]).unsqueeze(1).to(self.device, known.dtype)
            z_T = initial_noise(b, self.sample_shape, seed, kind, self.device, offset=start)
            lab = None if all_labels is None else torch.from_numpy(all_labels[start:start + b]).to(self.device)
            g = torch.Generator(device=self.device).manual_seed(seed * 7919 + start)
            edit = self._known_region(known, m, g, method)
            x = self.sample_batch(z_T, lab, settings, g, _with_progress(callback, bar, start), edit, resample)
            out.append((m * known + (1 - m) * x.float()).cpu())  # the known pixels, exactly
        bar.close()
        samples = torch.cat(out)
        info = {"model": self.name, **dataclasses.asdict(settings), "method": method, "resample": resample,
                "seed": seed, "n": n, "seconds": time.perf_counter() - started}
        return SampleResult(to_uint8(samples, self.value_range), all_labels, samples, self.value_range, info)

    def _known_region(self, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                      method: str) -> StepCallback:
        """The sampler-level callback that keeps the known region: known, mask (B, 1, 28, 28) in pixels."""
        cfg = self.config
        if cfg.diffusion.kind == "tutorial":  # its forward process is corrupt() with amount t; x0 is the prediction
            if method == "project":  # the step x (1 - m) + x0 m with x0 pasted: shift x by m / (1 - m) (known - x0)
                left = lambda step: step["steps"] - step["i"] - 1  # noqa: E731
                return lambda step: step["x_t"] + mask * (known - step["x0"]) / left(step) if left(step) else None
            return lambda step: mask * corrupt(known, torch.tensor(step["t"]), generator) + (1 - mask) * step["x_t"]
        schedule = make_schedule(cfg.diffusion.schedule, cfg.diffusion.timesteps)
        if cfg.latent is None:
            if method == "project":
                return projection(schedule, lambda x0: mask * known + (1 - mask) * x0)
            return replacement(schedule, known, mask, generator)
        ae, scale = self.autoencoder, cfg.latent.scale
        if method == "project":
            return projection(schedule, lambda z0: encode_latents(ae, mask * known + (1 - mask) * self.decode(z0),
                                                                  scale))
        background = -1.0 if self.value_range == "signed" else 0.0
        z_known = encode_latents(ae, mask * known + (1 - mask) * background, scale)
        z_mask = -F.max_pool2d(-mask, kernel_size=known.shape[-1] // z_known.shape[-1])  # cells fully known
        return replacement(schedule, z_known, z_mask, generator)

    def _reconstructions(self, n: int, seed: int, started: float) -> SampleResult:
        """An autoencoder's stand-in for samples: reconstructions of test images seed..seed+n-1 (cycling)."""
        images, labels = load_split(self.config.data.dataset, "test", self.config.data.data_dir)
        index = (seed + np.arange(n)) % len(images)
        ae = FrozenAutoencoder(self.net, self.config, "", self.path or Path("."))
        rec = reconstruct(ae, images[index])
        samples = to_float(rec, self.value_range)
        info = {"model": self.name, "reconstructions": True, "seed": seed, "n": n,
                "seconds": time.perf_counter() - started}
        return SampleResult(rec, labels[index].astype(np.int64), samples, self.value_range, info)


def check_inpainting_input(images, mask) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and a mask of the same shape with, in every image, known and unknown pixels;
    returns the images and the mask as float32 0/1 (1 = known). Anything else is a UserError naming it."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        what = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise UserError(f"images must be a uint8 numpy array (N, 28, 28) with pixels 0-255, got {what}.")
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
        raise UserError(f"images must have shape (N, 28, 28), got {images.shape}.")
    mask = np.asarray(mask)
    mask = mask[None] if mask.ndim == 2 and len(images) == 1 else mask
    if mask.shape != images.shape:
        raise UserError(f"the mask has shape {mask.shape} but the images {images.shape}; give one 28x28 mask per "
                        "image (nonzero = known).")
    known = (mask != 0).reshape(len(mask), -1)
    if not known.any(axis=1).all():
        raise UserError(f"the mask of image {int(np.flatnonzero(~known.any(axis=1))[0])} marks no pixel as known; "
                        "there is nothing to complete from (use sample for a new digit).")
    if not (~known).any(axis=1).all():
        raise UserError(f"the mask of image {int(np.flatnonzero(~(~known).any(axis=1))[0])} marks every pixel as "
                        "known; there is nothing to fill in.")
    return images, (mask != 0).astype(np.float32)


def half_mask(side: str, n: int = 1) -> np.ndarray:
    """(n, 28, 28) float32 masks keeping one half of each digit: side = top | bottom | left | right."""
    mask = np.zeros((28, 28), np.float32)
    halves = {"top": (slice(0, 14), slice(None)), "bottom": (slice(14, 28), slice(None)),
              "left": (slice(None), slice(0, 14)), "right": (slice(None), slice(14, 28))}
    if side not in halves:
        raise UserError(f"the half to keep is {side!r}; choose top, bottom, left or right.")
    mask[halves[side]] = 1.0
    return np.repeat(mask[None], n, axis=0)


def _with_progress(callback: StepCallback | None, bar, start: int) -> StepCallback | None:
    """The user's callback (told which images the batch holds) followed by one tick of the progress bar."""
    if callback is None and bar.disable:
        return None

    def step(info: dict) -> torch.Tensor | None:
        out = callback({**info, "start": start}) if callback is not None else None
        bar.update(1)
        return out

    return step


def load(name_or_path: str | Path | None = None, device: str | torch.device = "cpu",
         precision: str = "auto", compile: bool = False) -> Pipeline:
    """A `Pipeline` for a packaged model ('ddpm-cond', 'ldm'; None = 'ddpm-cond'), a run directory or a
    checkpoint file (a training state samples with its EMA weights). device: 'cpu', 'cuda', 'mps' or 'auto'.
    precision: 'auto' (bf16 on CPUs with bf16 matrix units, else fp32; `pipe.precision` says why), 'fp32', 'bf16'.
    compile: run the network under torch.compile (see `Pipeline`): worth it for thousands of digits."""
    device = resolve_device(str(device)) if isinstance(device, str) else torch.device(device)
    precision = resolve_precision(precision, device, "sample")  # a bad value is refused before any file is read
    path = ckpt.resolve_model_path(name_or_path)
    loaded = ckpt.load_checkpoint(path, device)
    net = ckpt.load_weights(build_model(loaded.config.model).to(device), ckpt.model_weights(loaded), path)
    net.eval()
    sampling_layout(net, device)
    name = assets.DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    pipe = Pipeline(loaded.config, net, device, path, name=name, precision=precision, compile=compile)
    pipe.autoencoder  # a latent model: refuse a missing or different autoencoder now, not after sampling
    return pipe


def from_training(cfg: RunConfig, weights: dict[str, torch.Tensor], device: torch.device) -> Pipeline:
    """A pipeline over weights held in memory (the training loop's in-run check)."""
    net = build_model(cfg.model).to(device)
    net.load_state_dict(weights)
    return Pipeline(cfg, net.eval(), device, name=f"{cfg.recipe} (training)")

