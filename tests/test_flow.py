"""Flow matching on the straight path: the maths pinned on Gaussian data, whose exact flow is known."""

import math

import pytest
import torch

from mnist_diffusion.diffusion.denoiser import velocity_from_x0_eps, x0_eps_from_velocity
from mnist_diffusion.diffusion.flow import (
    FlowPath,
    flow_grid,
    flow_matching_loss,
    sample_euler,
    sample_heun,
    sample_midpoint,
    sample_times,
)
from mnist_diffusion.diffusion.tutorial import sample_tutorial
from mnist_diffusion.errors import UserError

MU, S = 0.7, 0.4  # data x0 ~ N(MU, S^2) in every coordinate


def exact_denoiser(x_t: torch.Tensor, t: float):
    """E[x0 | x_t] for Gaussian data on x_t = (1 - t) x0 + t eps (and the eps that goes with it)."""
    var = (1 - t) ** 2 * S**2 + t**2
    x0 = MU + (1 - t) * S**2 / var * (x_t - (1 - t) * MU)
    return x0, (x_t - (1 - t) * x0) / t if t > 0 else torch.zeros_like(x_t)


def flow_error(sampler, steps: int) -> float:
    """Largest distance from the exact flow map x1 -> MU + S x1 after `steps` steps on the uniform grid."""
    x1 = torch.linspace(-2.5, 2.5, 41, dtype=torch.float64)
    out = sampler(exact_denoiser, x1.clone(), flow_grid(steps))
    return (out - (MU + S * x1)).abs().max().item()


@pytest.mark.parametrize("sampler, order", [(sample_euler, 1), (sample_heun, 2), (sample_midpoint, 2)])
def test_samplers_converge_to_the_exact_flow_map_at_least_at_their_order(sampler, order):
    errors = [flow_error(sampler, n) for n in (8, 16, 32, 64)]
    rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(r > order - 0.25 for r in rates[1:]), (errors, rates)  # midpoint does better here: order 3
    assert order > 1 or all(r < 1.25 for r in rates[1:]), (errors, rates)
    assert errors[-1] < (0.05 if order == 1 else 1e-3)


def test_the_tutorials_sampler_is_euler_with_an_x0_prediction_on_the_uniform_grid():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(1, 1, 28, 28, generator=g)
    net = lambda x: torch.sigmoid(3 * x * weight - 1)
    x = torch.rand(4, 1, 28, 28, generator=g)
    for steps in (1, 2, 5, 7):
        tutorial = sample_tutorial(net, x.clone(), steps)
        euler = sample_euler(lambda x_t, t: (net(x_t), None), x.clone(), flow_grid(steps))
        assert torch.equal(tutorial, euler), steps


def test_velocity_x0_and_eps_round_trip():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    for t in (0.0, 0.3, 0.9, 1.0):
        alpha, sigma = FlowPath().alpha_sigma(t)
        x_t = FlowPath().q_sample(x0, t, eps)
        x0_back, eps_back = x0_eps_from_velocity(x_t, velocity_from_x0_eps(x0, eps), alpha, sigma)
        assert torch.allclose(x0_back, x0, atol=1e-12) and torch.allclose(eps_back, eps, atol=1e-12)


def test_grids_run_from_one_to_zero_and_the_shift_moves_steps_towards_noise():
    assert flow_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert flow_grid(4, 1.0) == flow_grid(4)
    shifted = flow_grid(4, 3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and all(a > b for a, b in list(zip(shifted, flow_grid(4)))[1:-1])
    for bad in ({"steps": 0}, {"steps": True}, {"steps": 4, "shift": 0.0}, {"steps": 4, "shift": float("inf")}):
        with pytest.raises(UserError):
            flow_grid(**bad)
    with pytest.raises(UserError, match="descend"):
        sample_euler(exact_denoiser, torch.zeros(2), [1.0, 0.5])


def test_training_times_lie_inside_the_path_and_logit_normal_centres_them():
    g = torch.Generator().manual_seed(2)
    uniform = sample_times(20000, "uniform", generator=g)
    logit = sample_times(20000, "logit_normal", generator=g)
    assert uniform.min() > 0 and uniform.max() < 1 and logit.min() > 0 and logit.max() < 1
    assert (logit - 0.5).abs().mean() < (uniform - 0.5).abs().mean()  # mass near the middle of the path
    with pytest.raises(UserError, match="time sampling"):
        sample_times(4, "cosine")


def test_the_loss_vanishes_for_the_exact_velocity_of_a_single_point():
    c = torch.full((6, 1, 4, 4), 0.25)  # every sample the same point: v = (x_t - c) / t exactly
    net = lambda x_t, t_net, labels=None: (x_t - c) / (t_net / 1000).view(-1, 1, 1, 1)
    loss, per_sample, t = flow_matching_loss(net, c, generator=torch.Generator().manual_seed(3))
    assert loss.item() < 1e-8 and per_sample.shape == (6,) and ((t > 0) & (t < 1)).all()


# ---- flow models through the package: config, training, the pipeline --------------------------------------
TINY = [
    "data.limit=96",
    "train.batch_size=32",
    "train.max_steps=3",
    "train.log_every=1",
    "model.channels=[8,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "model.mid_attention=false",
]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    from mnist_diffusion.api import train

    return train(
        "flow-cond", out=tmp_path_factory.mktemp("flow") / "run", overrides=TINY, progress=False, samples=False
    )


def times_into(seen: list):
    """A step callback that records each step's time in `seen`."""
    return lambda step: seen.append(step["t"])


def test_a_flow_run_trains_logs_its_loss_by_time_quarter_and_samples_with_every_flow_sampler(flow_run):
    import json

    import numpy as np

    from mnist_diffusion.diffusion.samplers import names
    from mnist_diffusion.pipeline import load

    rows = [json.loads(line) for line in (flow_run / "metrics.jsonl").read_text().splitlines()]
    assert any(len(r.get("loss_by_quarter", [])) == 4 for r in rows)
    pipe = load(flow_run)
    assert names("flow") == ("heun", "euler", "midpoint") and pipe.config.diffusion.prediction == "velocity"
    for sampler in names("flow"):
        seen = []
        out = pipe.sample(4, labels=[3, 1, 4, 1], sampler=sampler, steps=3, seed=2, callback=times_into(seen))
        assert out.images.shape == (4, 28, 28) and out.images.dtype == np.uint8
        assert seen == [1.0, 2 / 3, 1 / 3]  # the uniform grid, descending towards the data at 0
        again = pipe.sample(4, labels=[3, 1, 4, 1], sampler=sampler, steps=3, seed=2)
        assert np.array_equal(out.images, again.images)
    shifted = []
    pipe.sample(1, labels=[0], steps=2, sampler="euler", shift=3.0, callback=lambda s: shifted.append(s["t"]))
    assert shifted == [1.0, 0.75]  # 3 t / (1 + 2 t) at t = 1/2


def test_a_flow_model_refuses_vp_samplers_and_resampling_in_one_sentence(flow_run):
    from mnist_diffusion.pipeline import half_mask, load

    pipe = load(flow_run)
    with pytest.raises(
        UserError, match="'ddim' does not fit a model of diffusion kind 'flow'; choose one of: heun, euler, midpoint"
    ):
        pipe.sample(2, sampler="ddim")
    images = pipe.sample(2, steps=2).images
    with pytest.raises(UserError, match="cannot resample: use resample=1"):
        pipe.inpaint(images, half_mask("top", 2), resample=2)


@pytest.mark.parametrize("method", ["project", "replace"])
def test_a_flow_model_completes_digits_keeping_the_known_pixels(flow_run, method):
    import numpy as np

    from mnist_diffusion.pipeline import half_mask, load

    pipe = load(flow_run)
    images = pipe.sample(3, steps=2).images
    out = pipe.inpaint(images, half_mask("left", 3), method=method, steps=3, labels=[1, 2, 3], guidance=2.0)
    known = half_mask("left", 3) > 0
    assert np.array_equal(out.images[known], images[known])


def test_the_flow_path_through_the_denoiser_turns_a_velocity_into_the_exact_clean_estimate():
    from mnist_diffusion.diffusion.denoiser import Denoiser

    path = FlowPath()

    def exact_velocity(x_t, t_net, labels=None):  # v = (x_t - E[x0 | x_t]) / t for the Gaussian data above
        t = t_net[0].item() / 1000
        return (x_t - exact_denoiser(x_t, t)[0]) / t

    den = Denoiser(exact_velocity, path, "velocity")
    x_t = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for t in (0.9, 0.5, 0.1):
        x0, eps = den(x_t, t)
        assert torch.allclose(x0, exact_denoiser(x_t, t)[0], atol=1e-12)
        assert torch.allclose((1 - t) * x0 + t * eps, x_t, atol=1e-12)


def test_flow_settings_are_checked_where_they_are_set():
    from mnist_diffusion.config import ConfigError, apply_overrides
    from mnist_diffusion.recipes import get_recipe

    with pytest.raises(ConfigError, match="a flow model predicts velocity"):
        apply_overrides(get_recipe("flow"), ["diffusion.prediction=v"])
    with pytest.raises(ConfigError, match="velocity is flow matching's"):
        apply_overrides(get_recipe("ddpm"), ["diffusion.prediction=velocity"])
    with pytest.raises(ConfigError, match="time_sampling"):
        apply_overrides(get_recipe("flow"), ["diffusion.time_sampling=cosine"])
    with pytest.raises(UserError, match="'dpmpp_2m' does not fit a model of diffusion kind 'flow'"):
        from mnist_diffusion.api import resolve_run

        resolve_run("flow", overrides=["sample.sampler=dpmpp_2m"])
