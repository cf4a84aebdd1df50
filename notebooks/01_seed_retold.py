# %% [markdown]
# # 1. The seed, retold: corrupt, denoise, repeat
#
# **What diffusion is.** Take a digit and add a little noise, then a little more, until nothing of the digit is
# left. Each small step is easy to describe and, if it is small enough, nearly easy to undo. A diffusion model
# is a network trained to undo it: shown a noisy image, it says what the clean one probably was. To make a new
# digit, start from pure noise and apply the network over and over, each time removing part of the noise; what
# remains at the end is a digit nobody drew. **DDPM** (Ho et al. 2020) made this work well: Gaussian noise in a
# fixed schedule of 1,000 small steps, a network told which step it is at and trained to predict the noise that
# was added. **Latent diffusion** (LDM, Rombach et al. 2022, the model family behind Stable Diffusion) runs the
# same walk in the small latent space of an autoencoder instead of on pixels, which cuts the work many times
# over, and adds text conditioning to steer what is drawn.
#
# This notebook retells the tutorial the project began from, *Generating MNIST with a diffusion model*
# ("Diffusion Model로 MNIST 생성해보기", the first of a four-part series), with every figure made live. It opens
# with the same ideas and then follows the tutorial's sections in the tutorial's order:
#
# | the tutorial | here |
# |---|---|
# | the idea: diffusion, DDPM, LDM / Stable Diffusion | this cell |
# | "Model structure": the `BasicUNet` class | section 1 (`mnist_diffusion.models.basic_unet.BasicUNet`, the same layers) |
# | "Adding noise": `noisy_x = (1-amount)*x + amount*noise`, `def corrupt(x, amount)` and its test plot (figure 1) | section 2 (`mnist_diffusion.diffusion.tutorial.corrupt`) |
# | "Training process": the train step (and the course's loss curve) | section 3, written out as in the tutorial |
# | "Training results": input / corrupted / prediction (figure 2) | section 4 |
# | "Diffusion process": the 5-step loop with `mix_factor` and its plot (figure 3) | section 5 |
#
# **What to expect.** Everything runs on a laptop CPU; training the toy model takes a minute or two, with a
# progress bar. Its digits at the end are **blurry blobs**, as the tutorial's own are: that is the recipe, not a
# bug. Section 6 puts them beside what the next steps give and says which notebook explains each. Digits are
# drawn white on black, as MNIST stores them (the tutorial's plots used the inverted `Greys` map).

# %%
import warnings

from tqdm import TqdmWarning

# tqdm's notebook bars need ipywidgets; without it tqdm.auto says so and draws a text bar, which is what we want
warnings.filterwarnings("ignore", category=TqdmWarning)

from helpers import figures_folder, show, size  # `size(full, tiny)`: the test suite runs a tiny edition

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait

FIGURES = figures_folder("01")

# %% [markdown]
# ## 1. The network: `BasicUNet`
#
# The seed's U-Net, layer for layer: three 5x5 convolutions down (max-pooling after the first two, whose
# outputs are kept), three up (upsampling, then adding the kept output), SiLU after every convolution. It gets
# **no noise level**: it must guess from the image how noisy it is. Its input is a batch of MNIST digits scaled
# to [0, 1], as the seed's DataLoader gives them.

# %%
import inspect
import time

import numpy as np
import torch

from mnist_diffusion import figures
from mnist_diffusion.data import load_split, to_float
from mnist_diffusion.models.basic_unet import BasicUNet

images, labels = load_split("mnist", "train")   # uint8 (60000, 28, 28), from the packaged MNIST
x = to_float(images[:8], "unit")                 # (8, 1, 28, 28) in [0, 1], what the tutorial's DataLoader gives
print(images.shape, images.dtype, "->", tuple(x.shape), float(x.min()), float(x.max()))

net = BasicUNet()
print(net)
print(f"{sum(p.numel() for p in net.parameters()):,} parameters; input {tuple(x.shape)} -> output "
      f"{tuple(net(x).shape)}")

# %% [markdown]
# ## 2. Corrupting digits with noise
#
# The seed's data are MNIST digits in [0, 1]. Its noise is **uniform**, `torch.rand_like(x)`, and `amount`
# blends image and noise: amount 0 is the clean digit, amount 1 pure noise. The project's `corrupt` is the
# seed's function (with an optional generator, so the figure is the same every run):

# %%
from mnist_diffusion.diffusion.tutorial import corrupt

print(inspect.getsource(corrupt))

# %% [markdown]
# The seed's first figure: the batch, and the same batch corrupted with `amount = torch.linspace(0, 1, 8)`,
# left to right. Each column is labelled with its amount.

# %%
show(figures.corruption_figure(x, FIGURES / "corruption.png"))

# %% [markdown]
# ## 3. Training: predict the clean digit
#
# The seed's train step, as written there: draw `noise_amount ~ U(0, 1)` per image, corrupt, let the network
# predict the clean image, and regress it onto the clean image with MSE (this is **x0 prediction**; DDPM, in
# notebook 2, predicts the noise instead). Adam at 1e-3, batch 128. The seed trains 3 epochs; here one pass over
# part of the training set keeps it to a minute or two (`md.train("seed")` runs the full recipe); the bar
# below counts the steps.

# %%
from tqdm.auto import tqdm

torch.manual_seed(0)
train_x = to_float(images[: size(30_000, 256)], "unit")
batch_size = 128
net = BasicUNet()
loss_fn = torch.nn.MSELoss()
opt = torch.optim.Adam(net.parameters(), lr=1e-3)

losses, started = [], time.perf_counter()
order = torch.randperm(len(train_x))             # the seed's DataLoader(shuffle=True)
for start in tqdm(range(0, len(train_x), batch_size), desc="training BasicUNet", unit="step"):
    x_batch = train_x[order[start:start + batch_size]]
    noise_amount = torch.rand(x_batch.shape[0])  # 0~1, one per image
    noisy_x = corrupt(x_batch, noise_amount)
    pred = net(noisy_x)                          # noisy x -> denoised x
    loss = loss_fn(pred, x_batch)                # MSE against the clean x
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
seconds = time.perf_counter() - started
print(f"{len(losses)} steps on {len(train_x):,} images in {seconds:.1f} s ({len(train_x) / seconds:.0f} images/s); "
      f"loss {np.mean(losses[:5]):.4f} (first 5 steps) -> {np.mean(losses[-5:]):.4f} (last 5)")

# %%
every = max(1, len(losses) // 40)                 # one point per `every` steps, as metrics.jsonl logs it
rows = [{"step": s + every, "loss": float(np.mean(losses[s:s + every]))} for s in range(0, len(losses), every)]
show(figures.loss_figure(rows, FIGURES / "loss.png", "BasicUNet, x0 prediction", source="the loop above"))

# %% [markdown]
# ## 4. One-shot denoising fails at high noise
#
# The seed's second figure: corrupt a batch with the amount rising left to right and denoise it in **one** call.
# At small amounts the prediction is close; towards amount 1 there is almost nothing left to recover and the
# prediction becomes a blurry average digit. The MSE per amount says the same in numbers.

# %%
from mnist_diffusion.recipes import get_recipe

net.eval()
pipe = md.Pipeline(get_recipe("seed"), net, name="BasicUNet (trained above)")  # the same net, ready to sample
test_images, test_labels = load_split("mnist", "test")
show(figures.one_shot_figure(pipe, to_float(test_images[:8], "unit"), FIGURES / "one_shot.png"))

clean = to_float(test_images[: size(1000, 32)], "unit")
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for amount in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        noisy = corrupt(clean, torch.full((len(clean),), amount), generator=g)
        mse = torch.nn.functional.mse_loss(net(noisy), clean).item()
        print(f"amount {amount:.1f}: one-shot MSE {mse:.4f}")

# %% [markdown]
# ## 5. Sampling: many small steps
#
# So the seed removes noise **gradually**: start from pure uniform noise, predict the clean image, move x only
# a fraction `mix_factor = 1 / (n_steps - step)` of the way towards it, and repeat. The fraction grows to 1 at
# the last step, so the result is the last prediction. Here is the seed's loop as written:

# %%
n_steps = 5
x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # x starts as pure noise
step_history = [x.detach().cpu()]
pred_output_history = []

for step in range(n_steps):
    with torch.no_grad():
        pred = net(x)                           # denoise the current x
    mix_factor = 1 / (n_steps - step)           # how far to move towards the prediction
    x = x * (1 - mix_factor) + pred * mix_factor
    pred_output_history.append(pred.detach().cpu())
    step_history.append(x.detach().cpu())

from mnist_diffusion.diffusion.tutorial import sample_tutorial

same = sample_tutorial(net, step_history[0], n_steps)
print("the package's sample_tutorial gives the same images:", torch.allclose(same, x, atol=1e-6))

# %% [markdown]
# The seed's third figure, labelled: per step (rows, with the nominal noise amount left in x), the model input
# x and the model's prediction. `pipe.sample(8, steps=5)` runs the same sampler (each image from its own
# seeded noise), so the CLI draws the same digits:
# `mnist-diffusion figures RUN_DIR` after `mnist-diffusion train --recipe seed`.

# %%
show(figures.steps_figure(pipe, FIGURES / "sampling_steps.png", n=8, steps=5))

# %% [markdown]
# More steps help only up to a point: the network was never told the noise level, and uniform noise is not
# what later models use. Below, the same starting noise with 1, 2, 5 and 20 steps (1 step is one-shot
# denoising).

# %%
import matplotlib.pyplot as plt

step_counts = size((1, 2, 5, 20), (1, 2, 5))
rows = np.stack([pipe.sample(8, steps=k, seed=0).images for k in step_counts])
fig, ax = plt.subplots(figsize=(6.5, 3.4))
figures.show_grid(ax, rows, [f"{k} steps" for k in step_counts], [f"#{i}" for i in range(8)],
                  "The tutorial's sampler with more steps", ylabel="sampler steps")
show(figures.save_figure(fig, FIGURES / "more_steps.png", "model BasicUNet (trained above), sampler tutorial, seed 0"))

# %% [markdown]
# ## 6. Why blobs, and what the next steps give
#
# The digits above are blobs, as the tutorial's are. The network is never told how noisy its input is, so at
# every step it must guess, and it hedges towards an average digit; uniform noise, five big steps and a short
# training add to it. The figure puts the tutorial's
# result beside the package's `ddpm-cond` model, which changes exactly those things: it is **told the noise
# level** (the timestep t) and trained on Gaussian noise to predict the noise (notebook 2, DDPM), it is asked
# for a digit and **guided** towards it (notebook 3), and it was trained for 51 epochs on a GPU instead of one
# pass on a CPU. Notebook 4 does the same walk in an autoencoder's latent space, as Stable Diffusion does.
# (A network with a noise-level input needs far more training than this notebook's minute before it pays off,
# so it is not trained here: `mnist-diffusion train --recipe ddpm-cond` is the way, on a GPU if there is one.)

# %%
ddpm = md.load("ddpm-cond")
tutorial_digits = pipe.sample(10, steps=5, seed=0).images        # the recipe above: no noise level, 5 steps
ddpm_digits = ddpm.sample(10, labels="0-9", seed=0).images      # t as input, DDPM, guidance, 8 steps
fig, ax = plt.subplots(figsize=(7, 2.2))
figures.show_grid(ax, np.stack([tutorial_digits, ddpm_digits]),
                  ["tutorial", "ddpm-cond"], [str(d) for d in range(10)],
                  "The tutorial's recipe beside the packaged DDPM (digits 0-9 for ddpm-cond)", ylabel="model")
show(figures.save_figure(fig, FIGURES / "next_steps.png",
                         "rows: BasicUNet trained above (notebook 1); ddpm-cond (notebooks 2 and 3); seed 0"))

# %% [markdown]
# ## Where next
#
# * `md.train("seed")` (or `mnist-diffusion train --recipe seed`) trains exactly this recipe for the seed's 3
#   epochs and writes a run directory; `mnist-diffusion figures RUN_DIR` draws these figures from it.
# * The seed promised two things for later parts: predicting the **noise** instead of the image, and working
#   in a **latent** space. Notebook 2 (DDPM) and notebook 4 (latent diffusion) do both; notebook 3 steers the
#   digit with guidance, and notebook 5 says how to judge samples like these with numbers.
