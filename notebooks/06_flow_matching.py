# %% [markdown]
# # 6. From the tutorial to flow matching to one step
#
# The tutorial of notebook 1 blended a digit with noise, `x = (1 - a) x0 + a noise`, trained a network to
# guess the clean digit, and sampled by moving a share `1 / (steps - i)` of the way to that guess at step `i`.
# Without saying so, that is **flow matching** (Lipman et al. 2023; Liu et al. 2023's "rectified flow"): the
# straight path between a digit and noise, walked back from noise to data with Euler's method. This notebook
# shows it, turns the tutorial into the flow matching that Stable Diffusion 3 and Flux use, and ends with
# **MeanFlow** (Geng et al. 2025), which draws a digit in one network pass.

# %%
from helpers import TINY, figures_folder, show, size  # `size(full, tiny)`: the test suite runs a tiny edition

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait

FIGURES = figures_folder("06")

# %%
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.diffusion import flow, samplers
from mnist_diffusion.diffusion.tutorial import sample_tutorial
from mnist_diffusion.models import build_model

test_images, test_labels = load_split("mnist", "test")

# %% [markdown]
# ## 1. The tutorial's sampler is Euler on a straight path
#
# Call the noise share `t`: the path from a digit (t = 0) to noise (t = 1) is `x_t = (1 - t) x0 + t eps`, a
# straight line, and its velocity `dx_t/dt = eps - x0`. Given a guess `x0_hat` of the clean digit, the velocity
# at `x_t` is `(x_t - x0_hat) / t`. One Euler step from t down to s moves x by `(s - t)` times that velocity:
#
# `x_s = x_t - (t - s) (x_t - x0_hat) / t = (s / t) x_t + (1 - s / t) x0_hat`.
#
# On the uniform grid t_i = 1 - i / n, the share `1 - s / t = (1/n) / (1 - i/n) = 1 / (n - i)`: exactly the
# tutorial's `mix`. Below, the tutorial's sampler and the package's flow Euler sampler, fed the same guesses
# (a BasicUNet, untrained: any guesser will do), give the same digits to the last bit.

# %%
torch.manual_seed(0)
basic = build_model(ModelConfig(kind="basic_unet")).eval()
noise = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
for steps in (1, 5, 10):
    tutorial = sample_tutorial(basic, noise.clone(), steps)
    euler = flow.sample_euler(lambda x_t, t: (basic(x_t), None), noise.clone(), flow.flow_grid(steps))
    print(f"{steps:2d} steps: identical to the bit: {torch.equal(tutorial, euler)}")

# %% [markdown]
# ## 2. Gaussian noise and a time input: flow matching
#
# Two changes make the tutorial flow matching as the field now teaches it. The noise becomes Gaussian, and the
# network is told t (the tutorial's had to guess how noisy its input was). It is trained to predict the
# velocity `v = eps - x0` at times drawn from a logit-normal (Esser et al. 2024: more training where the middle
# of the path is hardest): the `flow` and `flow-cond` recipes, whose class labels are dropped 10% of the time so
# that classifier-free guidance works on the velocity. Below, one test digit along the path.

# %%
digit = to_float(test_images[:1], "signed")
eps = torch.randn(digit.shape, generator=torch.Generator().manual_seed(2))
times = [0.0, 0.25, 0.5, 0.75, 1.0]
fig, axes = plt.subplots(1, len(times), figsize=(2 * len(times), 2.3))
for ax, t in zip(axes, times):
    ax.imshow(((1 - t) * digit + t * eps)[0, 0], cmap="gray", vmin=-1, vmax=1)
    ax.set_title(f"t = {t:g}")
    ax.axis("off")
fig.savefig(FIGURES / "path.png", dpi=80, bbox_inches="tight")
plt.close(fig)
show(FIGURES / "path.png")

# %% [markdown]
# ## 3. Velocity fields on a 2-D toy
#
# In two dimensions the velocity field can be drawn. Take data in eight small round clusters on a circle: the
# best guess of the clean point given `x_t` weighs each cluster by how likely it is to have made `x_t`, and
# `(x_t - x0_hat) / t` is the exact velocity a perfect network would learn. Arrows show it at three times;
# lines are samples carried from noise (t = 1) to data (t = 0) by Heun's method.

# %%
centres = torch.tensor([[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 9)[:-1]], dtype=torch.float64)
SPREAD = 0.3  # each cluster is a Gaussian of this spread around its centre


def toy_denoiser(x, t):
    """E[x0 | x_t] for the clusters (and the eps that goes with it): each cluster's own estimate, weighed by how
    likely that cluster is to have made x_t."""
    t = float(t)
    var = (1 - t) ** 2 * SPREAD**2 + t**2  # of x_t around (1 - t) * centre
    gap = x[:, None, :] - (1 - t) * centres[None]
    w = torch.softmax(-(gap**2).sum(-1) / (2 * var), dim=1)
    x0 = ((centres[None] + (1 - t) * SPREAD**2 / var * gap) * w[..., None]).sum(1)
    return x0, (x - (1 - t) * x0) / t


grid = torch.stack(torch.meshgrid(torch.linspace(-2, 2, 17), torch.linspace(-2, 2, 17), indexing="xy"), -1)
grid = grid.reshape(-1, 2).double()
starts = torch.randn(size(200, 40), 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
paths = []
ends = flow.sample_heun(toy_denoiser, starts, flow.flow_grid(20), callback=lambda s: paths.append(s["x_t"].clone()))
paths = torch.stack([*paths, ends])
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, t in zip(axes, (0.9, 0.5, 0.2)):
    x0, _ = toy_denoiser(grid, t)
    v = (grid - x0) / t
    ax.quiver(grid[:, 0], grid[:, 1], -v[:, 0], -v[:, 1], color="tab:blue", alpha=0.6)
    ax.plot(paths[:, :, 0], paths[:, :, 1], color="grey", lw=0.4, alpha=0.5)
    ax.scatter(centres[:, 0], centres[:, 1], color="tab:red", zorder=3)
    ax.set_title(f"the flow towards the data at t = {t:g}")
    ax.set_aspect("equal")
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
fig.savefig(FIGURES / "velocity_field.png", dpi=80, bbox_inches="tight")
plt.close(fig)
show(FIGURES / "velocity_field.png")

# %% [markdown]
# ## 4. Euler against Heun at few steps
#
# Euler follows the arrow where it stands; Heun also looks where the step lands and averages the two arrows,
# and the midpoint method takes the arrow half a step ahead (two network passes a step, one for the last).
# Their error shrinks with the square of the step size, Euler's only with the step size. Per step they always
# land closer; per network pass -- what costs time -- only once the steps are small enough to follow the
# path's bends. Measured on the toy, against its flow solved with 400 steps (mean distance of the end points):

# %%
exact = flow.sample_heun(toy_denoiser, starts, flow.flow_grid(400))


def error(sampler, steps):
    return (sampler(toy_denoiser, starts, flow.flow_grid(steps)) - exact).norm(dim=1).mean().item()


print("steps  Euler  Heun  midpoint | Euler at Heun's passes")
for steps in (2, 4, 8, 16):
    e, h, m = (error(f, steps) for f in (flow.sample_euler, flow.sample_heun, flow.sample_midpoint))
    print(f"{steps:5d}  {e:.3f}  {h:.3f}  {m:.3f}    | {error(flow.sample_euler, 2 * steps - 1):.3f} ({2 * steps - 1} steps)")


# %% [markdown]
# The same on digits, with the packaged `flow-cond` model (its card says how it was trained): each row one
# sampler, each column a number of steps, the same seeds throughout.


# %%
def tiny_run(recipe, **train):
    """The tiny edition trains a tiny model of `recipe` for a few steps instead of loading the packaged one."""
    model = {"channels": [8, 16], "embed_dim": 16, "groups": 4, "mid_attention": False}
    run = md.train(recipe, out=f"{tempfile.mkdtemp()}/{recipe}", data={"limit": 96}, model=model, progress=False,
                   samples=False, train={"batch_size": 32, "max_steps": 2, **train})
    return md.load(run)


flow_cond = tiny_run("flow-cond") if TINY else md.load("flow-cond")
print(flow_cond)
rows = []
for sampler in ("euler", "heun", "midpoint"):
    for steps in (2, 4, 8):
        out = flow_cond.sample(10, labels="0-9", sampler=sampler, steps=steps, seed=4)
        rows.append(out.images)
fig, axes = plt.subplots(3, 3, figsize=(12, 4.5))
for ax, images, (sampler, steps) in zip(axes.flat, rows, [(s, n) for s in ("euler", "heun", "midpoint")
                                                          for n in (2, 4, 8)]):
    ax.imshow(np.concatenate(list(images), axis=1), cmap="gray")
    ax.set_title(f"{sampler}, {steps} steps ({samplers.get(sampler).evaluations(steps)} passes)", fontsize=9)
    ax.axis("off")
fig.savefig(FIGURES / "samplers.png", dpi=80, bbox_inches="tight")
plt.close(fig)
show(FIGURES / "samplers.png")

# %% [markdown]
# ## 5. One pass: MeanFlow
#
# A flow model still needs several passes, because one Euler step along a curved path lands off it. MeanFlow
# (Geng et al. 2025) learns the **average** velocity `u(z_t, r, t)` over a stretch [r, t] of the path instead,
# so that `z_r = z_t - (t - r) u` is exact, and a single step from noise (t = 1) to data (r = 0) is a whole
# sample. Its training target comes from an identity: since `(t - r) u` is the integral of the velocity from r
# to t, `u = v - (t - r) du/dt`, where `du/dt` along the path is one Jacobian-vector product of the network. No
# teacher: the network learns from its own derivative. Guidance is folded into the target, so a guided digit
# still costs one pass. The packaged `meanflow` model (its card says how it was trained), in one and two
# passes:

# %%
mean = tiny_run("meanflow", init=str(flow_cond.path)) if TINY else md.load("meanflow")
print(mean)
for steps in (1, 2):
    out = mean.sample(20, labels="0-9", steps=steps, seed=5)
    out.save(FIGURES / f"meanflow_{steps}.png")
    show(FIGURES / f"meanflow_{steps}.png")

# %% [markdown]
# ## 6. How fast, beside DDPM
#
# Network passes per digit decide the time on a CPU. The packaged DDPM needs 16 (8 DPM-Solver++ steps, each
# guided pass batching the conditional and unconditional halves), `flow-cond` 16 too (8 guided Euler steps), MeanFlow 1 (guidance folded in):

# %%
ddpm = tiny_run("ddpm-cond") if TINY else md.load("ddpm-cond")
n = size(1000, 20)
print(f"{'model':>10}  {'sampler':>9}  steps  seconds for {n} digits  digits/s")
for pipe in (ddpm, flow_cond, mean):
    pipe.sample(size(64, 4), seed=0)  # warm-up
    started = time.perf_counter()
    out = pipe.sample(n, seed=0)
    seconds = time.perf_counter() - started
    s = out.settings
    print(f"{pipe.config.recipe:>10}  {s['sampler']:>9}  {s['steps']:5d}  {seconds:22.2f}  {n / seconds:8.0f}")

# %% [markdown]
# How good each is, at 10,000 digits on the project's evaluator, is in the results page (`quality.sampling`
# records) and in each model's card.
