# %% [markdown]
# # 5. Judging samples: FID, KID, precision, recall, label accuracy
#
# Looking at grids tells a lot, but comparing models needs numbers. The project scores samples in the
# features of a small MNIST classifier that ships with it (`evaluator-mnist`, 99.47% test accuracy), against
# the 10,000 test digits, and always beside two **baselines at the same N**: real training digits (about the
# best a generator can do) and uniform noise (the worst).

# %%
from helpers import figures_folder, show, size  # `size(full, tiny)`: the test suite runs a tiny edition

import mnist_diffusion as md  # before torch: it sets how OpenMP's idle threads wait

FIGURES = figures_folder("05")

# %%
import numpy as np

from mnist_diffusion import figures
from mnist_diffusion.evaluation import format_report

pipe = md.load("ddpm-cond")
n = size(1000, 50)
report = md.evaluate(pipe, n=n, steps=size(5, 3), metrics=["fid", "kid", "precision_recall", "classes",
                                                             "label_accuracy"])
print(format_report(report))

# %% [markdown]
# What each row means:
#
# * **FID** (Fréchet distance): fit a Gaussian to the samples' features and one to the test set's; the distance
#   between them. 0 is identical statistics. Biased upwards at small N.
# * **KID** (kernel distance): an unbiased estimate of a kernel two-sample distance, averaged over random
#   subsets; it can be slightly negative for a perfect generator. Comparable across N in expectation.
# * **precision / recall** (k-NN manifolds, Kynkäänniemi 2019): the share of samples that look like real
#   digits, and the share of real digits the samples cover.
# * **class entropy**: how evenly the evaluator's predicted classes spread (3.32 bits = all ten equally).
# * **label accuracy**: the share of samples the evaluator reads as the digit that was asked for. Guided
#   samples can beat real digits here: the evaluator misreads a few hard real digits, while guidance draws
#   clear ones.
#
# The numbers from the report, pulled out:

# %%
s, train, noise = report["samples"], report["baselines"]["train"], report["baselines"]["noise"]
print(f"FID@{n}: samples {s['fid']:.3f}, real training digits {train['fid']:.3f}, noise {noise['fid']:.1f}; "
      f"samples / real = {s['fid'] / train['fid']:.1f}x")
print(f"label accuracy: samples {s['label_accuracy']:.1%}, real {train['label_accuracy']:.1%}, "
      f"noise {noise['label_accuracy']:.1%}")

# %% [markdown]
# ## Why N matters
#
# Real training digits are as good as samples get, yet their FID against the test set is far from 0 at small
# N: FID's bias shrinks roughly like 1/N. KID has no such bias, only noise. So a FID means something only beside
# a baseline at the **same N**, which every report prints. Below, random real training digits at several N.

# %%
import matplotlib.pyplot as plt

from mnist_diffusion.data import load_split

train_images, train_labels = load_split("mnist", "train")
rng = np.random.default_rng(0)
sizes = size([100, 300, 1000, 3000, 10000], [20, 60])
rows = []
print("     N    FID (real digits)   KID x 1000 (mean ± std)")
for count in sizes:
    pick = rng.choice(len(train_images), count, replace=False)
    r = md.evaluate(train_images[pick], metrics=["fid", "kid"], baselines=False, kid_subsets=size(50, 10))["samples"]
    rows.append((count, r["fid"], r["kid_mean"] * 1000, r["kid_std"] * 1000))
    print(f"{count:6d}   {r['fid']:17.3f}   {r['kid_mean'] * 1000:8.3f} ± {r['kid_std'] * 1000:.3f}")
N, fid, kid, kid_std = (np.array(c) for c in zip(*rows))
fig, axs = plt.subplots(1, 2, figsize=(9, 3.6))
axs[0].plot(N, fid, "o-")
axs[0].set(xscale="log", yscale="log", xlabel="N (samples)", ylabel="FID", title="FID of real digits vs N")
axs[1].errorbar(N, kid, yerr=kid_std, fmt="o-", capsize=3)
axs[1].axhline(0, color="0.5", lw=0.8)
axs[1].set(xscale="log", xlabel="N (samples)", ylabel="KID x 1000", title="KID of real digits vs N")
for ax in axs:
    ax.grid(alpha=0.3)
show(figures.save_figure(fig, FIGURES / "why_n_matters.png", "random MNIST training digits against the test set; "
                         "evaluator-mnist features"))

# %% [markdown]
# ## What the metrics catch, and what they miss
#
# Two broken "generators" to see which number moves: one that returns **the training images themselves**
# (perfect scores on everything above, so the report also counts near-copies of training digits) and one whose
# digits are fine but carry the **wrong labels** (only label accuracy notices). A near-copy (`memorisation`)
# is a sample whose pixels lie within a third of the distance from its nearest training digit to that
# digit's own nearest neighbour.

# %%
k = size(500, 20)
copies = train_images[:k]
wrong = (train_labels[:k] + 1) % 10
for name, images, labels in (("copies of training digits", copies, train_labels[:k]),
                             ("right digits, wrong labels", copies, wrong)):
    r = md.evaluate(images, labels=labels, metrics=["fid", "label_accuracy", "memorisation"], baselines=False)
    s = r["samples"]
    print(f"{name:28s} FID@{k} {s['fid']:.3f}   label accuracy {s['label_accuracy']:.1%}   "
          f"near-copies {s['memorisation']['copy_fraction']:.1%}")
out = pipe.sample(k, steps=size(5, 3), seed=5)
s = md.evaluate(out.images, labels=out.labels, metrics=["memorisation"], baselines=False)["samples"]
print(f"{'ddpm-cond samples':28s} near-copies {s['memorisation']['copy_fraction']:.1%}")

# %% [markdown]
# FID cannot tell either broken generator from a good one: both score the real digits' FID at this N. The
# near-copy count flags the first, label accuracy the second.
#
# `mnist-diffusion evaluate MODEL --n 10000` prints the full report; the packaged models' reports at full size
# are on the [results page](../results.md).
