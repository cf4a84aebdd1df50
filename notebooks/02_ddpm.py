# %% [markdown]
# # 2. DDPM: a noise schedule, noise prediction and fast samplers
#
# The seed blended digits with uniform noise and let the network guess how much there was. DDPM (Ho et al.
# 2020) makes the noise **Gaussian**, fixes how much of it there is at each of T = 1000 timesteps (the
# *schedule*), tells the network t, and trains it to predict the noise. This notebook uses the packaged
# class-conditional model `ddpm-cond` (its recipe trained for 51 epochs, two minutes on one GPU; by default it
# samples with DPM-Solver++ in 8 steps at guidance 1.35) to look inside.

# %%
from helpers import figures_folder, show, size  # `size(full, tiny)`: the test suite runs a tiny edition

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait

FIGURES = figures_folder("02")

# %%
import numpy as np
import torch

from mnist_diffusion import figures
from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.diffusion.schedule import make_schedule

pipe = md.load("ddpm-cond")
print(pipe)
schedule = make_schedule(pipe.config.diffusion.schedule, pipe.config.diffusion.timesteps)
print(schedule)
test_images, test_labels = load_split("mnist", "test")
first = [int(np.flatnonzero(test_labels == d)[0]) for d in range(10)]  # one test image of each digit

# %% [markdown]
# ## The forward process q(x_t | x_0)
#
# With alpha_bar_t the schedule's cumulative product, a noisy digit at timestep t is
#
# x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,  eps ~ N(0, I)
#
# in one step, from the clean digit (images scaled to [-1, 1]). Below, each row keeps one noise draw eps and
# the columns raise t; under each t is sqrt(alpha_bar_t), the share of the digit that is left.

# %%
show(figures.forward_process_figure(schedule, test_images[first[:5]], FIGURES / "forward_process.png",
                                    labels=list(range(5)), name=pipe.config.diffusion.schedule))
print("    t  sqrt(alpha_bar)  sqrt(1-alpha_bar)        SNR   sigma = sqrt((1-ab)/ab)")
for t in (0, 50, 100, 200, 300, 500, 700, 999):
    ab = float(schedule.alpha_bar(t))
    print(f"{t:5d}  {ab ** 0.5:15.4f}  {(1 - ab) ** 0.5:17.4f}  {ab / (1 - ab):9.3g}  {float(schedule.sigma(t)):9.3g}")

# %% [markdown]
# ## The schedule's signal-to-noise ratio
#
# SNR(t) = alpha_bar_t / (1 - alpha_bar_t). The linear schedule (this model's) spends many of its 1000 steps
# at very low SNR, where the digit is gone; the cosine schedule falls more evenly.

# %%
show(figures.snr_figure(pipe, FIGURES / "snr.png"))

# %% [markdown]
# ## Noise prediction: what the network sees and predicts
#
# The loss (`mnist_diffusion.diffusion.ddpm_loss.diffusion_loss`, Ho 2020 algorithm 1): draw t and eps, make
# x_t, and regress the network's output onto eps. From a noise estimate the clean digit follows:
# x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t). `pipe.denoiser(labels)` is the network as
# D(x_t, t) -> (x0_hat, eps_hat). For one digit at several t: what the net sees (x_t), the true noise, the
# predicted noise and the x0 estimate (noise drawn as grey = 0).

# %%
import matplotlib.pyplot as plt

from mnist_diffusion.data import to_uint8

ts = (50, 200, 400, 600, 800, 950)
x0 = to_float(test_images[first[3:4]], "signed")                  # a 3
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
denoise = pipe.denoiser(labels=torch.tensor([3]))
panels = {"x_t (input)": [], "true noise": [], "predicted noise": [], "x0 estimate": []}
with torch.no_grad():
    for t in ts:
        x_t = schedule.q_sample(x0, t, eps)
        x0_hat, eps_hat = denoise(x_t, t)
        panels["x_t (input)"].append(to_uint8(x_t.clamp(-1, 1), "signed")[0])
        panels["true noise"].append(to_uint8((eps / 3).clamp(-1, 1), "signed")[0])
        panels["predicted noise"].append(to_uint8((eps_hat / 3).clamp(-1, 1), "signed")[0])
        panels["x0 estimate"].append(to_uint8(x0_hat.clamp(-1, 1), "signed")[0])
fig, ax = plt.subplots(figsize=(6.2, 4.6))
figures.show_grid(ax, np.stack([np.stack(v) for v in panels.values()]), list(panels), [f"t={t}" for t in ts],
                  "What the network sees and predicts", xlabel="timestep t")
show(figures.save_figure(fig, FIGURES / "sees_and_predicts.png",
                         "model ddpm-cond, label 3, no guidance; noise shown as eps/3 (grey = 0)"))

# %% [markdown]
# The same in numbers, on many test digits: the error of the noise estimate and of the x0 estimate per t.
# At small t the noise is tiny and hard to see, but x0 is nearly given; at large t the noise is nearly all of
# x_t (easy to predict), but x0 can only be guessed. Near t = 999 the x0 estimate divides by
# sqrt(alpha_bar_t), which is tiny there, so any error in eps_hat is magnified many times over: samplers
# clip that estimate or never use it alone.

# %%
n = size(500, 16)
x0 = to_float(test_images[:n], "signed")
eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
denoise = pipe.denoiser(labels=torch.from_numpy(test_labels[:n]))
print("    t   MSE(eps_hat, eps)   MSE(x0_hat, x0)")
with torch.no_grad():
    for t in (10, 100, 300, 500, 700, 900, 999):
        x0_hat, eps_hat = denoise(schedule.q_sample(x0, t, eps), t)
        print(f"{t:5d}   {torch.mean((eps_hat - eps) ** 2).item():17.4f}   {torch.mean((x0_hat - x0) ** 2).item():15.4f}")

# %% [markdown]
# ## Three samplers on the same noise
#
# Sampling walks a descending grid of timesteps from pure noise. **Ancestral** DDPM (Ho 2020 alg. 2) takes all
# 1000 steps, adding fresh noise at each; **DDIM** (Song 2021) is deterministic and can skip steps;
# **DPM-Solver++(2M)** (Lu 2022) is a second-order solver that needs even fewer. Each row starts from the same
# noise (seed 0, one image per digit, guidance 2); images/s are measured here, on this machine, for 10 images.
# Time follows the number of network calls, for digits the evaluator reads just as well. Ten images are a
# small batch, where fixed costs weigh more; the [results page](../results.md) has the package's sampling
# speed at its own batch sizes.

# %%
runs = [("ddpm", size(1000, 4)), ("ddim", size(50, 3)), ("dpmpp_2m", size(20, 3)), ("dpmpp_2m", size(8, 2))]
rows, names = [], []
print("sampler    steps  network calls/image  seconds  images/s  label accuracy")
for sampler, steps in runs:
    out = pipe.sample(10, labels="0-9", sampler=sampler, steps=steps, guidance=2.0, seed=0)
    acc = md.evaluate(out.images, labels=out.labels, metrics=["label_accuracy"], baselines=False)
    seconds = out.settings["seconds"]
    print(f"{sampler:9s} {steps:6d} {2 * steps:20d} {seconds:8.2f} {10 / seconds:9.2f} "
          f"{acc['samples']['label_accuracy']:15.0%}")
    rows.append(out.images)
    names.append(f"{sampler}, {steps} steps")
fig, ax = plt.subplots(figsize=(7.6, 3.6))
figures.show_grid(ax, np.stack(rows), names, [str(d) for d in range(10)], "Samplers on the same noise",
                  xlabel="digit asked for")
show(figures.save_figure(fig, FIGURES / "samplers.png", "model ddpm-cond, guidance 2, seed 0; guided: 2 network "
                         "calls per step"))

# %% [markdown]
# Watching one sampler: x_t and the x0 estimate at every step of DPM-Solver++ (10 steps). The estimate is a
# recognisable digit long before x_t is. Then the same as an animation, with a step counter
# (`mnist-diffusion sample --labels 0-9 --n 10 --gif out.gif` writes it from the shell).

# %%
trajectory = figures.Trajectory(pipe.value_range, keep=10)
out = pipe.sample(10, labels="0-9", steps=size(10, 2), callback=trajectory)
show(figures.trajectory_figure(trajectory, out, FIGURES / "steps.png", pipe))
show(figures.write_trajectory_gif(trajectory, out, FIGURES / "denoising.gif"))
