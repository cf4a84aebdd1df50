"""Noise processes as the pipeline sees them: where sampling starts, how a sampler walks back, and how a known
region is held during the walk (inpainting). One class per `diffusion.kind`; `make_process` is the one place
that maps a kind to its class.

A process knows no network architecture and no sample space: it takes the network as a callable
`net(x_t, t, labels) -> out` (the tutorial's `net(x) -> x0`) and works on whatever tensors it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch

from mnist_diffusion.config import DiffusionConfig, SampleConfig
from mnist_diffusion.diffusion import samplers
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.flow import FlowPath, flow_grid
from mnist_diffusion.diffusion.inpaint import projection, replacement, sample_repaint
from mnist_diffusion.diffusion.meanflow import average_velocity
from mnist_diffusion.diffusion.schedule import make_schedule, sampling_grid
from mnist_diffusion.diffusion.steps import Callback
from mnist_diffusion.diffusion.tutorial import corrupt
from mnist_diffusion.errors import UserError

Net = Callable[..., torch.Tensor]
Paste = Callable[[torch.Tensor], torch.Tensor]


class NoiseProcess(Protocol):
    noise: Literal["gaussian", "uniform"]  # the distribution sampling starts from

    def sample(
        self,
        net: Net,
        z_T: torch.Tensor,
        settings: SampleConfig,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        resample: int = 1,
        guide: Net | None = None,
    ) -> torch.Tensor: ...

    def projection(self, paste: Paste) -> Callback: ...

    def replacement(
        self, known: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> Callback: ...


class DDPMProcess:
    """The VP process of DDPM (Ho et al. 2020): a schedule and a prediction type; samplers from the registry."""

    noise = "gaussian"

    def __init__(self, diffusion: DiffusionConfig):
        self.schedule = make_schedule(diffusion.schedule, diffusion.timesteps)
        self.prediction = diffusion.prediction

    def denoiser(
        self,
        net: Net,
        labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
        guide: Net | None = None,
    ) -> Denoiser:
        """`net` as a denoiser D(x_t, t) -> (x0, eps) with this conditioning (and an autoguidance `guide`)."""
        return Denoiser(
            net,
            self.schedule,
            self.prediction,
            labels=labels,
            guidance=guidance,
            guidance_interval=guidance_interval,
            guide=guide,
        )

    def sample(self, net, z_T, settings, labels=None, generator=None, callback=None, resample=1, guide=None):
        """x0 (B, C, H, W) from z_T ~ N(0, I) with `settings`' sampler; resample > 1 walks the grid with RePaint's
        resampling (DDIM steps, eta 1)."""
        interval = None if settings.guidance_interval is None else tuple(settings.guidance_interval)
        denoiser = self.denoiser(net, labels, settings.guidance, interval, guide)
        if resample > 1:
            grid = sampling_grid(self.schedule, settings.steps, settings.spacing)
            return sample_repaint(denoiser, z_T, grid, resample, eta=1.0, generator=generator, callback=callback)
        return samplers.sample(
            settings.sampler,
            denoiser,
            z_T,
            settings.steps,
            spacing=settings.spacing,
            generator=generator,
            callback=callback,
            eta=settings.eta,
        )

    def projection(self, paste: Paste) -> Callback:
        return projection(self.schedule, paste)

    def replacement(self, known, mask, generator=None) -> Callback:
        return replacement(self.schedule, known, mask, generator)


class FlowProcess(DDPMProcess):
    """Flow matching's straight path (`flow.py`): Gaussian noise at t = 1, the data at t = 0; ODE samplers over a
    grid of times (uniform, or shifted by `sample.shift`). The path stands where DDPM's schedule does, so the
    denoiser, guidance and inpainting's projection and replacement work on it unchanged."""

    def __init__(self, diffusion: DiffusionConfig):
        self.schedule = FlowPath()
        self.prediction = diffusion.prediction

    def sample(self, net, z_T, settings, labels=None, generator=None, callback=None, resample=1, guide=None):
        if resample > 1:
            raise UserError("RePaint's resampling steps a VP process; a flow model completes with resample=1.")
        interval = None if settings.guidance_interval is None else tuple(settings.guidance_interval)
        denoiser = self.denoiser(net, labels, settings.guidance, interval, guide)
        walk = samplers.check(settings.sampler, "flow").function_for("flow")
        return walk(denoiser, z_T, flow_grid(settings.steps, settings.shift), generator=generator, callback=callback)


class MeanFlowProcess(FlowProcess):
    """MeanFlow (`meanflow.py`): the straight path of flow matching walked in jumps by the network's average
    velocity, one pass a step; its guidance was folded in when it was trained, so it takes none here."""

    def sample(self, net, z_T, settings, labels=None, generator=None, callback=None, resample=1, guide=None):
        if resample > 1:
            raise UserError("RePaint's resampling steps a VP process; a MeanFlow model completes with resample=1.")
        if settings.guidance != 1.0 or guide is not None:
            raise UserError(
                "A MeanFlow model has its guidance folded in by training (meanflow.guidance); leave guidance and "
                "autoguidance out."
            )
        walk = samplers.check(settings.sampler, "meanflow").function
        grid = flow_grid(settings.steps, settings.shift)
        return walk(average_velocity(net, labels), z_T, grid, generator=generator, callback=callback)


class TutorialProcess:
    """The tutorial's toy process (`diffusion/tutorial.py`): uniform noise blended in, the clean image predicted,
    its own sampler; no noise-level input, no labels."""

    noise = "uniform"

    def sample(self, net, z_T, settings, labels=None, generator=None, callback=None, resample=1, guide=None):
        if resample > 1:
            raise UserError("The tutorial's sampler cannot resample; use resample=1.")
        return samplers.check(settings.sampler, "tutorial").function(net, z_T, settings.steps, callback=callback)

    def projection(self, paste: Paste) -> Callback:
        """Step i moves x by 1 / (steps - i) of the way to x0; with x0 corrected, x moves by that share of the
        correction more, so shift x by (paste(x0) - x0) / (steps - i - 1) beforehand (nothing at the last step,
        whose result is x0 itself)."""

        def callback(step: dict) -> torch.Tensor | None:
            left = step["steps"] - step["i"] - 1
            return step["x_t"] + (paste(step["x0"]) - step["x0"]) / left if left else None

        return callback

    def replacement(self, known, mask, generator=None) -> Callback:
        """The known region put back at the step's noise amount with fresh uniform noise."""
        return lambda step: mask * corrupt(known, torch.tensor(step["t"]), generator) + (1 - mask) * step["x_t"]


PROCESSES: dict[str, Callable[[DiffusionConfig], NoiseProcess]] = {
    "ddpm": DDPMProcess,
    "flow": FlowProcess,
    "meanflow": MeanFlowProcess,
    "tutorial": lambda diffusion: TutorialProcess(),
}


def make_process(diffusion: DiffusionConfig) -> NoiseProcess:
    """The process a model's `diffusion` config names."""
    if diffusion.kind not in PROCESSES:
        raise UserError(
            f"A {diffusion.kind!r} model has no noise process to sample; choose a diffusion model "
            f"({', '.join(PROCESSES)})."
        )
    return PROCESSES[diffusion.kind](diffusion)
