"""mnist-diffusion: diffusion models for MNIST, from the seed tutorial's toy denoiser to guided DDPM and LDM."""

__version__ = "0.1.0"
