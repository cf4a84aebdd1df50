# %% [markdown]
# # 4. Latent diffusion: diffuse in a small code, decode at the end
#
# Latent diffusion (Rombach et al. 2022, the idea behind Stable Diffusion) first trains an **autoencoder**
# that squeezes an image into a small latent and back, then runs diffusion on the latents. The packaged `ldm`
# works in the `ldm-ae` autoencoder's 4 x 7 x 7 latents: 196 numbers instead of 784 pixels, and a network that
# runs on 7 x 7 maps.

# %%
from helpers import figures_folder, show, size  # `size(full, tiny)`: the test suite runs a tiny edition

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait

FIGURES = figures_folder("04")

# %%
import numpy as np
import torch

from mnist_diffusion import figures
from mnist_diffusion.data import load_split, to_float

ldm = md.load("ldm")
ae = ldm.autoencoder
print(ldm)
test_images, test_labels = load_split("mnist", "test")
x = to_float(test_images[:16], "signed")
z = ae.encode(x)
print(f"images {tuple(x.shape)} -> latents {tuple(z.shape)}: {x[0].numel()} numbers -> {z[0].numel()} "
      f"({x[0].numel() / z[0].numel():.0f}x fewer); latent scale {ldm.config.latent.scale:.4f}")

# %% [markdown]
# ## The autoencoder: reconstructions and latents
#
# Top: test digits; bottom: decoded from their latents (the posterior mean). The PSNR is over the ten shown;
# below it, over many test digits: what the latent model draws can be no sharper than these reconstructions.
# The latent scale printed above brings the latents to about unit variance, the size of noise the diffusion
# schedule assumes.

# %%
first = [int(np.flatnonzero(test_labels == d)[0]) for d in range(10)]
show(figures.reconstruction_figure(ae, test_images[first], FIGURES / "reconstructions.png", list(range(10)), "ldm-ae"))

from mnist_diffusion.latent import reconstruct, reconstruction_psnr

many = test_images[: size(2000, 32)]
print(f"PSNR over {len(many)} test digits: {reconstruction_psnr(many, reconstruct(ae, many)):.2f} dB")

# %% [markdown]
# Each digit's latent as four 7 x 7 maps (scaled as the diffusion model sees them). They are not little
# pictures of the digit: the decoder gives them meaning.

# %%
show(figures.latent_channels_figure(ae, test_images[first[:6]], ldm.config.latent.scale, FIGURES / "latent_channels.png",
                                    list(range(6)), "ldm-ae"))

# %% [markdown]
# Blending two latents and decoding gives digits along the way; blending pixels only cross-fades.

# %%
show(figures.interpolation_figure(ae, test_images[first[1]], test_images[first[8]], FIGURES / "interpolation.png",
                                  name="ldm-ae"))

# %% [markdown]
# ## Sampling in latent space
#
# The same samplers and guidance as in pixels, on (4, 7, 7) latents; the callback still gets decoded x_t and
# x0 (and the latents themselves as `z_t`, `z0`).

# %%
shapes, trajectory = [], figures.Trajectory(ldm.value_range, keep=10)


def watch(step):
    shapes.append((tuple(step["z_t"].shape[1:]), tuple(step["x_t"].shape[1:])))
    trajectory(step)


out = ldm.sample(10, labels="0-9", steps=size(10, 2), callback=watch)
print("the sampler works on", shapes[0][0], "latents; the callback also sees x_t decoded to", shapes[0][1])
show(figures.trajectory_figure(trajectory, out, FIGURES / "latent_steps.png", ldm))

# %% [markdown]
# ## Why it is faster, measured
#
# The same sampler, steps and guidance for the pixel model and the latent model, timed here (the second of two
# runs, so one-off start-up costs are not counted); the latent model's time includes decoding. Each network call
# works on 7 x 7 maps instead of 28 x 28, with fewer parameters. Both rates depend on how busy the machine
# is; the [results page](../results.md) has the same comparison on a quiet machine, with FID for both.

# %%
pixel = md.load("ddpm-cond")
n, steps = size(64, 10), size(20, 3)
rates = {}
for name, model in (("ddpm-cond (pixels)", pixel), ("ldm (latents)", ldm)):
    for _ in range(2):
        out = model.sample(n, labels="0-9", steps=steps, seed=0)
    acc = md.evaluate(out.images, labels=out.labels, metrics=["label_accuracy"], baselines=False)
    rates[name] = n / out.settings["seconds"]
    params = sum(p.numel() for p in model.net.parameters())
    print(f"{name:20s} {params:>10,} parameters, works on {model.sample_shape}: {rates[name]:7.1f} images/s, "
          f"label accuracy {acc['samples']['label_accuracy']:.0%}")
ratio = rates["ldm (latents)"] / rates["ddpm-cond (pixels)"]
print(f"latent / pixel speed: {ratio:.1f}x ({n} images, {steps} DPM-Solver++ steps, guidance 2, "
      f"{torch.get_num_threads()} threads)")
