"""Flow matching on the straight path: the maths pinned on Gaussian data, whose exact flow is known."""

import math

import pytest
import torch

from mnist_diffusion.diffusion.flow import (
    FlowPath,
    flow_grid,
    flow_matching_loss,
    sample_euler,
    sample_heun,
    sample_midpoint,
    sample_times,
    velocity_from_x0_eps,
    x0_eps_from_velocity,
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
    net = lambda x: torch.sigmoid(3 * x * weight - 1)  # noqa: E731 - any clean-image predictor
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
    assert flow_grid(4, "shifted", 1.0) == flow_grid(4)
    shifted = flow_grid(4, "shifted", 3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and all(a > b for a, b in list(zip(shifted, flow_grid(4)))[1:-1])
    for bad in ({"steps": 0}, {"steps": 4, "spacing": "karras"}, {"steps": 4, "spacing": "shifted", "shift": 0.0}):
        with pytest.raises(UserError):
            flow_grid(**bad)
    with pytest.raises(UserError, match="descend"):
        sample_euler(exact_denoiser, torch.zeros(2), [1.0, 0.5])


def test_training_times_lie_inside_the_path_and_logit_normal_centres_them():
    g = torch.Generator().manual_seed(2)
    uniform = sample_times(20000, "uniform", generator=g)
    logit = sample_times(20000, "logit_normal", generator=g)
    assert 0 < uniform.min() and uniform.max() < 1 and 0 < logit.min() and logit.max() < 1
    assert (logit - 0.5).abs().mean() < (uniform - 0.5).abs().mean()  # mass near the middle of the path
    with pytest.raises(UserError, match="time sampling"):
        sample_times(4, "cosine")


def test_the_loss_vanishes_for_the_exact_velocity_of_a_single_point():
    c = torch.full((6, 1, 4, 4), 0.25)  # every sample the same point: v = (x_t - c) / t exactly
    net = lambda x_t, t_net, labels=None: (x_t - c) / (t_net / 1000).view(-1, 1, 1, 1)  # noqa: E731
    loss, per_sample, t = flow_matching_loss(net, c, generator=torch.Generator().manual_seed(3))
    assert loss.item() < 1e-8 and per_sample.shape == (6,) and ((0 < t) & (t < 1)).all()
