"""MeanFlow: the average-velocity identity pinned on Gaussian data, whose exact flow map is known; the sampler,
guidance folded into the target, a tiny run through the package, and two ranks under torchrun."""

import json
import math

import numpy as np
import pytest
import torch

from mnist_diffusion.diffusion.meanflow import (
    average_velocity,
    meanflow_loss,
    meanflow_target,
    sample_interval,
    sample_meanflow,
)
from mnist_diffusion.errors import UserError
from test_flow import TINY as FLOW_TINY

MU, S = 0.7, 0.4  # data x0 ~ N(MU, S^2) in every coordinate


def sd(t):
    """The spread of z_t = (1 - t) x0 + t eps for that data: sqrt((1 - t)^2 S^2 + t^2)."""
    return torch.sqrt((1 - t) ** 2 * S**2 + t**2)


def exact_u(z, r, t):
    """The exact average velocity (z_t - z_r) / (t - r) along the flow, which moves a point as its standardised
    value zeta = (z - (1 - t) MU) / sd(t) stays fixed; at r = t the instantaneous velocity."""
    t, r = t.view(-1, 1).double(), r.view(-1, 1).double()
    zeta = (z - (1 - t) * MU) / sd(t)
    instant = -MU + zeta * ((1 - t) * -(S**2) + t) / sd(t)  # d/dt of (1 - t) MU + sd(t) zeta
    z_r = (1 - r) * MU + sd(r) * zeta
    gap = t - r
    return torch.where(gap > 0, (z - z_r) / gap.clamp(min=1e-300), instant)


def exact_net(z, t_net, labels=None, guidance=None, gap_net=None):
    """A network with an interval input that outputs the exact average velocity (times as the package scales them)."""
    t = t_net / 1000
    return exact_u(z, t - gap_net / 1000, t)


def marginal_case(n=64):
    """Points z_t of the Gaussian data's path at times r < t, and the marginal velocity v(z_t, t) there."""
    g = torch.Generator().manual_seed(0)
    t = 0.05 + 0.9 * torch.rand(n, generator=g, dtype=torch.float64)
    r = t * torch.rand(n, generator=g, dtype=torch.float64)
    z = (1 - t).view(-1, 1) * MU + sd(t).view(-1, 1) * torch.randn(n, 8, generator=g, dtype=torch.float64)
    return z, r, t, exact_u(z, t, t)


def test_the_exact_average_velocity_meets_its_own_target_through_the_jvp():
    """u = v - (t - r) du/dt holds for the exact field with v the marginal velocity: the target the JVP builds
    equals u to rounding, which pins the tangent (v, 0, 1) and the time scaling of the network's inputs."""
    z, r, t, v = marginal_case()
    u, target = meanflow_target(average_velocity(exact_net), z, r, t, v)
    assert torch.allclose(u, exact_u(z, r, t), atol=1e-12)
    assert (u - target).abs().max().item() < 1e-9


def test_a_wrong_average_velocity_misses_its_target_where_r_differs_from_t():
    def flow_only(z, t_net, labels=None, guidance=None, gap_net=None):  # the instantaneous velocity at any interval
        t = t_net / 1000
        return exact_u(z, t, t)

    z, r, t, v = marginal_case()
    u, target = meanflow_target(average_velocity(flow_only), z, r, t, v)
    assert (u - target).abs().max().item() > 1e-2  # u(z, r, t) = v(z, t) breaks the identity once r < t
    u, target = meanflow_target(average_velocity(flow_only), z, t, t, v)
    assert (u - target).abs().max().item() < 1e-9  # at r = t MeanFlow is flow matching, which that field solves


def test_the_loss_of_a_single_point_vanishes_for_its_exact_straight_velocity():
    """Data at one point c: paths are straight lines, u = (z - c) / t at any r, and the conditional velocity is
    the marginal one, so every sample's error is zero (du/dt = v / t - (z - c) / t^2 = 0 along the path)."""
    c = torch.full((64, 1, 2, 2), 0.25, dtype=torch.float64)

    def straight(z, t_net, labels=None, guidance=None, gap_net=None):
        return (z - c) / (t_net / 1000).view(-1, 1, 1, 1)

    _, error, _ = meanflow_loss(straight, c, r_ratio=1.0, generator=torch.Generator().manual_seed(1))
    assert error.max().item() < 1e-12


def test_along_the_nets_own_velocity_the_exact_field_is_left_only_the_flow_matching_error():
    """tangent="model" takes du/dt along the net's velocity at (z_t, t): for the exact field that is the marginal
    velocity, so the target is u + (v_sample - v) at any r and each sample's error is its flow-matching error, the
    same as at r = t. Along the sample's own velocity the JVP adds noise wherever r < t."""
    x0 = MU + S * torch.randn(512, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def errors(r_ratio, tangent):
        g = torch.Generator().manual_seed(5)  # the same times and noise each call; only r = t or not differs
        return meanflow_loss(exact_net, x0, r_ratio=r_ratio, tangent=tangent, weight_power=0.0, generator=g)[1]

    flow_matching = errors(0.0, "model")
    assert torch.allclose(errors(1.0, "model"), flow_matching, rtol=1e-5)  # the error is summed in float32
    assert (errors(1.0, "sample") - flow_matching).abs().max() > 1e-2


def test_times_are_sorted_and_a_share_of_them_apart():
    r, t = sample_interval(20000, 0.25, "logit_normal", -0.4, 1.0, torch.Generator().manual_seed(2))
    assert (r <= t).all() and r.min() > 0 and t.max() < 1
    assert abs((r < t).float().mean().item() - 0.25) < 0.02


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_sampler_with_the_exact_average_velocity_lands_on_the_exact_flow_map(steps):
    from mnist_diffusion.diffusion.flow import flow_grid

    z1 = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64).view(-1, 1)
    seen = []
    out = sample_meanflow(average_velocity(exact_net), z1.clone(), flow_grid(steps), callback=seen.append)
    assert torch.allclose(out, MU + S * z1, atol=1e-9)
    assert [s["t"] for s in seen] == flow_grid(steps)[:-1] and torch.allclose(seen[-1]["x0"], out, atol=1e-9)
    with pytest.raises(UserError, match="descend strictly"):
        sample_meanflow(average_velocity(exact_net), z1, [1.0, 0.5])


def test_guidance_is_folded_into_the_target_and_dropped_labels_learn_the_plain_velocity():
    """A net with constant outputs (du/dt = 0): labelled samples' target is w v + (1 - w) u(no label), unlabelled
    ones' is v; the per-sample errors say which target each sample met."""
    a, b, w = 0.3, -0.5, 3.0

    def constant(z, t_net, labels, guidance=None, gap_net=None):
        return torch.where((labels == 10).view(-1, 1), torch.full_like(z, b), torch.full_like(z, a))

    x0 = torch.zeros(4000, 2, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    labels = torch.zeros(4000, dtype=torch.long)
    _, error, _ = meanflow_loss(constant, x0, labels, 10, label_dropout=0.5, guidance=w, r_ratio=0.5, generator=g)
    # x0 = 0: v = eps ~ N(0, 1). Kept labels: E (a - w eps - (1 - w) b)^2 = (a - (1 - w) b)^2 + w^2; dropped:
    # E (a - eps)^2 = a^2 + 1. Half of each, so the mean error sits between, at their average.
    kept, dropped = (a - (1 - w) * b) ** 2 + w**2, a**2 + 1
    assert math.isclose(error.mean().item(), (kept + dropped) / 2, rel_tol=0.08)


# ---- through the package -------------------------------------------------------------------------------------
TINY = [*FLOW_TINY[:2], "train.max_steps=2", *FLOW_TINY[3:]]  # a tiny flow-cond run, 2 steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mnist_diffusion.api import train

    root = tmp_path_factory.mktemp("meanflow")
    flow = train("flow-cond", out=root / "flow", overrides=TINY, progress=False, samples=False)
    mean = train("meanflow", out=root / "mean", overrides=[*TINY, f"train.init={flow}"], progress=False, samples=False)
    return flow, mean


def test_a_meanflow_run_starts_from_a_flow_model_and_draws_in_one_or_two_passes(runs):
    from mnist_diffusion.pipeline import half_mask, load

    flow, mean = runs
    cfg = json.loads((mean / "config.json").read_text())
    assert cfg["train"]["init"] == str(flow) and len(cfg["train"]["init_sha256"]) == 64
    start = json.loads((mean / "metrics.jsonl").read_text().splitlines()[0])
    assert start["precision"] == "fp32"
    pipe = load(mean)
    calls = []
    pipe.net.register_forward_hook(lambda *args: calls.append(1))
    for steps in (1, 2):
        calls.clear()
        out = pipe.sample(4, labels=[1, 2, 3, 4], steps=steps, seed=5)
        assert len(calls) == steps and out.images.shape == (4, 28, 28)
        assert np.array_equal(out.images, pipe.sample(4, labels=[1, 2, 3, 4], steps=steps, seed=5).images)
    with pytest.raises(UserError, match="guidance folded in"):
        pipe.sample(2, labels=[1, 2], guidance=2.0)
    with pytest.raises(
        UserError, match="'ddim' does not fit a model of diffusion kind 'meanflow'; choose one of: meanflow"
    ):
        pipe.sample(2, sampler="ddim")
    images = pipe.sample(2, steps=1).images
    known = half_mask("top", 2) > 0
    assert np.array_equal(pipe.inpaint(images, half_mask("top", 2), steps=2).images[known], images[known])


def test_a_meanflow_model_must_come_whole(runs):
    from mnist_diffusion.config import ConfigError, apply_overrides
    from mnist_diffusion.recipes import get_recipe

    with pytest.raises(ConfigError, match="all three or none"):
        apply_overrides(get_recipe("meanflow"), ["model.interval_input=false"])
    with pytest.raises(ConfigError, match="does not fit this network"):
        from mnist_diffusion.api import train

        train(
            "meanflow",
            out=runs[1].parent / "wide",
            overrides=[*TINY, "model.channels=[8,24]", f"train.init={runs[0]}"],
            progress=False,
        )
    assert not (runs[1].parent / "wide" / "config.json").exists()


def test_two_ranks_hold_identical_weights_after_meanflow_steps(tmp_path):
    """The JVP runs on the bare module, past DDP's gradient hooks; the loop averages the gradients itself. Each
    rank trains on its own slice of the batch, so without that the ranks' weights part after the first step."""
    import os
    import subprocess
    import sys

    from mnist_diffusion.training import distributed as dist_utils

    run, sums = tmp_path / "run", tmp_path / "sums"
    args = [
        "--recipe",
        "meanflow",
        "--limit",
        "128",
        "--no-progress",
        "--no-samples",
        "--max-steps",
        "3",
        "--out",
        str(run),
    ]
    for s in [
        "model.channels=[8,16]",
        "model.embed_dim=16",
        "model.groups=4",
        "model.mid_attention=false",
        "train.batch_size=32",
        "train.threads=1",
        "train.device=cpu",
    ]:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", dist_utils.CHECKSUM_ENV: str(sums)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "mnist_diffusion",
        "train",
        *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rank0, rank1 = ((sums / f"rank{r}.txt").read_text().split() for r in (0, 1))
    assert len(rank0) == 6 and rank0 == rank1  # steps 1-3, the same weights' hash on both ranks
