"""Named starting configurations. `train --recipe NAME` starts from one; `--set key=value` adjusts it."""

from __future__ import annotations

from dataclasses import replace

from mnist_diffusion.config import (
    DataConfig,
    DiffusionConfig,
    DistillConfig,
    LatentConfig,
    MeanFlowConfig,
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
    diffusion=DiffusionConfig(kind="tutorial"),
    train=TrainConfig(epochs=3, batch_size=128, optimizer="adam", lr=1e-3, ema_decay=None, label_dropout=0.0),
    sample=SampleConfig(sampler="tutorial", steps=5, spacing="linspace"),
)

# DDPM (Ho et al. 2020): noise prediction, linear schedule, T = 1000, unconditional. The seed's "next post".
DDPM = RunConfig(
    recipe="ddpm",
    data=DataConfig(value_range="signed"),
    model=ModelConfig(kind="unet", num_classes=0),
    diffusion=DiffusionConfig(kind="ddpm", schedule="linear", timesteps=1000, prediction="eps"),
    train=TrainConfig(
        epochs=10,
        batch_size=128,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.0,
        warmup_steps=200,
        grad_clip=1.0,
        ema_decay=0.999,
        label_dropout=0.0,
    ),
    sample=SampleConfig(sampler="dpmpp_2m", steps=20, guidance=1.0, spacing="trailing"),
)

# Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022): labels dropped 10% of the time.
# Min-SNR-5 loss weighting (Hang et al. 2023) converges markedly faster, which matters on a CPU budget, and so
# does lr 2e-3 with a 20-step warm-up, with no loss after the full 10 epochs (the `peers.budget` and `gpu.check`
# records in docs/results.md).
DDPM_COND = RunConfig(
    recipe="ddpm-cond",
    data=DDPM.data,
    model=ModelConfig(kind="unet", num_classes=10),
    diffusion=DiffusionConfig(
        kind="ddpm", schedule="linear", timesteps=1000, prediction="eps", loss_weighting="min_snr", min_snr_gamma=5.0
    ),
    train=TrainConfig(
        epochs=10,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=20,
        grad_clip=1.0,
        ema_decay=0.999,
        label_dropout=0.1,
    ),
    sample=SampleConfig(sampler="dpmpp_2m", steps=20, guidance=2.0, spacing="trailing"),
)

# The autoencoder of latent diffusion (Rombach et al. 2022): 28x28 digits <-> (4, 7, 7) latents, trained with
# L1 reconstruction + 1e-6 KL. Lean widths: latent diffusion runs its encoder on every training batch.
LDM_AE = RunConfig(
    recipe="ldm-ae",
    data=DataConfig(value_range="signed"),
    model=ModelConfig(kind="autoencoder", channels=(16, 32, 64), latent_channels=4, mid_attention=False),
    diffusion=DiffusionConfig(kind="autoencoder", kl_weight=1e-6),
    train=TrainConfig(
        epochs=1,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=100,
        grad_clip=1.0,
        ema_decay=0.999,
        label_dropout=0.0,
    ),
)

# Latent diffusion: the class-conditional DDPM of `ddpm-cond` run on the frozen `ldm-ae` autoencoder's latents.
# latent.scale 0 means "measure it": at the start of training the run records 1 / std of its training latents
# and the autoencoder's sha256 in its config, and every later use checks them.
# The latent U-Net is deliberately small (widths (64, 96), one block per level, no middle residual block: about
# a ninth of the pixel U-Net's work per pass) so that sampling is several times faster than in pixels; being
# cheap, it trains for 12 epochs. lr 2e-3 with 20 warm-up steps, as `ddpm-cond`. Guidance 2 by default: about
# about the lowest that keeps nearly every digit the one asked for (speed, quality and the guidance sweep:
# assets/ldm.md and the `sampling.latent_vs_pixel` and `quality.sampling` records in docs/results.md).
LDM = RunConfig(
    recipe="ldm",
    data=DataConfig(value_range="signed"),
    model=ModelConfig(
        kind="unet",
        in_channels=4,
        channels=(64, 96),
        blocks_per_level=1,
        num_classes=10,
        mid_block=False,
        mid_attention=True,
    ),
    diffusion=DDPM_COND.diffusion,
    train=TrainConfig(
        epochs=12,
        batch_size=128,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.0,
        warmup_steps=20,
        grad_clip=1.0,
        ema_decay=0.999,
        label_dropout=0.1,
    ),
    sample=SampleConfig(sampler="dpmpp_2m", steps=20, guidance=2.0, spacing="trailing"),
    latent=LatentConfig(autoencoder="ldm-ae", autoencoder_sha256="", scale=0.0, shape=(4, 7, 7)),
)

# Flow matching (Lipman et al. 2023; Liu et al. 2023): the straight path x_t = (1 - t) x0 + t eps, the network
# predicting the velocity eps - x0 at times drawn logit-normal (Esser et al. 2024), sampled by Heun's method on
# the flow ODE. The U-Net and training of `ddpm` / `ddpm-cond`; what the tutorial's sampler already was, with
# Gaussian noise and a time input (notebook 06).
FLOW = RunConfig(
    recipe="flow",
    data=DDPM.data,
    model=DDPM.model,
    diffusion=DiffusionConfig(kind="flow", prediction="velocity", time_sampling="logit_normal"),
    train=DDPM.train,
    sample=SampleConfig(sampler="heun", steps=8, guidance=1.0),
)

# Class-conditional flow matching with classifier-free guidance on the velocity.
FLOW_COND = RunConfig(
    recipe="flow-cond",
    data=DDPM_COND.data,
    model=DDPM_COND.model,
    diffusion=FLOW.diffusion,
    train=DDPM_COND.train,
    sample=SampleConfig(sampler="heun", steps=8, guidance=2.0),
)

# MeanFlow (Geng et al. 2025): digits in one network pass, trained without a teacher on the average velocity of the
# flow-cond path, with classifier-free guidance folded into the target. The times and share of r < t are the
# paper's CIFAR-10 ones (logit-normal(-2, 2), three quarters apart), which reach the long jumps one pass needs; du/dt
# is taken along the net's own velocity ("Improved Mean Flows"), which keeps the sample's noise out of the target
# (the comparison is in assets/meanflow.md). Training starts from a flow model's weights when `--set
# train.init=...` names one (the interval input then starts at zero: the flow's velocity at every interval); lr
# 2e-4, a tenth of the flows', since it fine-tunes.
MEANFLOW = RunConfig(
    recipe="meanflow",
    data=DDPM_COND.data,
    model=replace(DDPM_COND.model, interval_input=True),
    diffusion=DiffusionConfig(
        kind="meanflow", prediction="velocity", time_sampling="logit_normal", logit_mean=-2.0, logit_std=2.0
    ),
    train=replace(DDPM_COND.train, batch_size=64, lr=2e-4, checkpoint_every=200),
    sample=SampleConfig(sampler="meanflow", steps=1, guidance=1.0),
    meanflow=MeanFlowConfig(r_ratio=0.75, guidance=1.5, weight_power=0.75, tangent="model"),
)

# A few-step student of a guided teacher (training/distill.py): `--set distill.teacher=ddpm-cond` for the pixel
# model. The network, noise process and latent space are copied from the teacher when the run starts (so
# --set model.*, diffusion.* or latent.* is refused); lr 3e-4, below the teachers' 2e-3, since it fine-tunes.
DISTILL = RunConfig(
    recipe="distill",
    data=DataConfig(value_range="signed"),
    train=TrainConfig(
        epochs=4,
        batch_size=128,
        optimizer="adamw",
        lr=3e-4,
        weight_decay=0.0,
        warmup_steps=50,
        grad_clip=1.0,
        ema_decay=0.999,
        label_dropout=0.0,
    ),
    distill=DistillConfig(teacher="ldm", method="trajectory", steps=4, teacher_steps=20),
)

RECIPES: dict[str, RunConfig] = {
    cfg.recipe: cfg for cfg in (SEED, DDPM, DDPM_COND, FLOW, FLOW_COND, MEANFLOW, LDM_AE, LDM, DISTILL)
}


def get_recipe(name: str) -> RunConfig:
    """The recipe called `name`; an unknown name is a UserError listing the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserError(f"Unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}.") from None
