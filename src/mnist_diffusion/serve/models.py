"""The models a page can use, loaded on first use, and how many threads a model's one-digit requests run on."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

from mnist_diffusion.diffusion import samplers
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import Pipeline, load
from mnist_diffusion.serve.checks import shown


class ThreadChoice:
    """How many intra-op threads one model's one-digit requests run on: all of them or one, whichever is faster.

    A digit at a time is a batch of one or two, so each of a step's hundreds of parallel loops is tiny: on a quiet
    2-core virtual machine, waking the other core for each one made the page's digits 1.4-1.8x as slow as one
    thread did (benchmarks/results/serve_latency.md against serve_latency_all_threads.md); where wake-ups are
    cheap or cores many, all threads may win. So the first requests after a model's warm-up alternate between the
    two, `TRIALS` each, and then the one with the shorter median time per frame is kept (a trial request with
    another sampler, Heun's two passes a step, can tip it; the choice lasts as long as the server).
    """

    TRIALS = 2

    def __init__(self, most: int, try_one: bool = True):
        self.options = [most, 1] if most > 1 and try_one else [most]
        self.seconds: dict[int, list[float]] = {n: [] for n in self.options}
        self.warm = False

    @property
    def decided(self) -> int | None:
        if all(len(v) >= self.TRIALS for v in self.seconds.values()):
            return min(self.options, key=lambda n: float(np.median(self.seconds[n])))
        return None

    def pick(self) -> int:
        if self.decided is not None:
            return self.decided
        return min(self.options, key=lambda n: len(self.seconds[n]))  # the one tried least, all threads first

    def record(self, threads: int, seconds_per_frame: float) -> None:
        if not self.warm:  # the first request also warms the model up: not a fair time
            self.warm = True
        elif self.decided is None:
            self.seconds[threads].append(seconds_per_frame)


class Models:
    """The models a page can use: packaged names or run directories, each loaded once, on first use."""

    def __init__(self, names: list[str], device: str = "cpu", precision: str = "auto", tune_threads: bool = True):
        self.names = list(dict.fromkeys(names))
        self.device, self.precision, self.tune_threads = device, precision, tune_threads
        self.loaded: dict[str, Pipeline] = {}
        self.threads: dict[str, ThreadChoice] = {}
        self.most_threads = torch.get_num_threads()  # read now: a running one-digit request may have set fewer
        self._loading = threading.Lock()  # requests load in worker threads; each model once

    def get(self, name: Any) -> Pipeline:
        if name not in self.names:
            raise UserError(f"unknown model {shown(name)}; this server offers {', '.join(self.names)}.")
        with self._loading:
            if name not in self.loaded:
                pipe = load(name, self.device, self.precision)
                # on a GPU the host's threads only feed it: left as they are
                self.threads[name] = ThreadChoice(self.most_threads, self.tune_threads and pipe.device.type == "cpu")
                self.loaded[name] = pipe
        return self.loaded[name]

    def describe(self) -> list[dict]:
        out = []
        for name in self.names:
            pipe = self.get(name)
            s = pipe.config.sample
            out.append(
                {
                    "name": name,
                    "kind": "latent" if pipe.config.latent else pipe.config.diffusion.kind,
                    "classes": pipe.num_classes,
                    "sampler": s.sampler,
                    "steps": s.steps,
                    "inpaint_steps": pipe.inpaint_steps,
                    "inpaint_resample": inpaint_resample(pipe),
                    "drawn_steps": drawn_steps(pipe),
                    "guidance": s.guidance if pipe.num_classes else 1.0,
                    "samplers": _samplers(pipe),
                }
            )
        return out


def _samplers(pipe: Pipeline) -> list[str]:
    """The samplers the page offers for a model: those of its noise process that need no distilled network; a
    distilled student only the one it was distilled for."""
    if pipe.config.distill is not None:
        return [pipe.config.sample.sampler]
    return list(samplers.names(pipe.config.diffusion.kind, for_any_model=True))


# Completing a few hand-drawn strokes (a tenth of the canvas known) takes more steps than completing a half or an
# erased mark: on the `quality.inpainting` benchmark's strokes 50 steps beat 20 by far, where halves and erasures
# gained little (docs/results.md).
DRAWN_STROKES_STEPS = 50


def drawn_steps(pipe: Pipeline) -> int:
    """The steps of the page's completion of drawn strokes: `DRAWN_STROKES_STEPS`, or the model's inpainting steps
    where more; a distilled student keeps its own few."""
    return pipe.inpaint_steps if pipe.config.distill is not None else max(pipe.inpaint_steps, DRAWN_STROKES_STEPS)


def inpaint_resample(pipe: Pipeline) -> int:
    """RePaint resampling for the page's completions: 3 where the process can resample (a VP process and a model
    that is not a distilled student), else 1. Three passes a step fill halves, drawn strokes and erased marks of
    test digits closer to real digits than one pass does, at every model measured (`quality.inpainting` on
    docs/results.md)."""
    if pipe.config.distill is not None or pipe.config.diffusion.kind != "ddpm":
        return 1
    return 3
