"""mnist-diffusion: diffusion models for MNIST, from the seed tutorial's toy denoiser to guided DDPM and LDM.

    import mnist_diffusion
    pipe = mnist_diffusion.load()                   # packaged 'ddpm-cond'; or 'ldm', a run directory, a file
    out = pipe.sample(20, labels=[3] * 20, seed=1)  # out.images: uint8 (20, 28, 28); out.grid(): a PIL image
    run = mnist_diffusion.train("ddpm-cond", out="runs/c", train={"max_steps": 200})
    report = mnist_diffusion.evaluate(run, n=1000)

See docs/api.md.
"""

# OpenMP reads its settings once, when torch loads: set them before it does (a short spin on a quiet machine).
from mnist_diffusion import openmp

openmp.set_waiting()

__version__ = "0.1.0"

from mnist_diffusion.api import evaluate, resolve_run, train  # noqa: E402
from mnist_diffusion.assets import PACKAGED  # noqa: E402
from mnist_diffusion.errors import UserError  # noqa: E402
from mnist_diffusion.pipeline import Pipeline, SampleResult, load  # noqa: E402

__all__ = [
    "PACKAGED",
    "Pipeline",
    "SampleResult",
    "UserError",
    "__version__",
    "evaluate",
    "load",
    "resolve_run",
    "train",
]
