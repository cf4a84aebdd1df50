"""Named starting configurations. `train --recipe NAME` starts from one; `--set key=value` adjusts it."""

from __future__ import annotations

from mnist_diffusion.config import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from mnist_diffusion.errors import UserError

# The seed tutorial, exactly: BasicUNet, uniform-noise corrupt(), x0 MSE, Adam 1e-3, batch 128, 3 epochs,
# images in [0, 1], 5-step mixing sampler.
SEED = RunConfig(
    recipe="seed",
    data=DataConfig(value_range="unit"),
    model=ModelConfig(kind="basic_unet"),
    diffusion=DiffusionConfig(kind="seed"),
    train=TrainConfig(epochs=3, batch_size=128, optimizer="adam", lr=1e-3, ema_decay=None, label_dropout=0.0),
    sample=SampleConfig(sampler="seed", steps=5, spacing="linspace"),
)

# DDPM (Ho et al. 2020): noise prediction, linear schedule, T = 1000, unconditional. The seed's "next post".
DDPM = RunConfig(
    recipe="ddpm",
    data=DataConfig(value_range="signed"),
    model=ModelConfig(kind="unet", num_classes=0),
    diffusion=DiffusionConfig(kind="ddpm", schedule="linear", timesteps=1000, prediction="eps"),
    train=TrainConfig(
        epochs=10, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_steps=200,
        grad_clip=1.0, ema_decay=0.999, label_dropout=0.0,
    ),
    sample=SampleConfig(sampler="dpmpp_2m", steps=20, guidance=1.0, spacing="trailing"),
)

# Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022): labels dropped 10% of the time.
DDPM_COND = RunConfig(
    recipe="ddpm-cond",
    data=DDPM.data,
    model=ModelConfig(kind="unet", num_classes=10),
    diffusion=DDPM.diffusion,
    train=TrainConfig(
        epochs=10, batch_size=128, optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_steps=200,
        grad_clip=1.0, ema_decay=0.999, label_dropout=0.1,
    ),
    sample=SampleConfig(sampler="dpmpp_2m", steps=20, guidance=2.0, spacing="trailing"),
)

RECIPES: dict[str, RunConfig] = {cfg.recipe: cfg for cfg in (SEED, DDPM, DDPM_COND)}


def get_recipe(name: str) -> RunConfig:
    """The recipe called `name`; an unknown name is a UserError listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}.") from None
