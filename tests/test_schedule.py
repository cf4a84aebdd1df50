"""The noise schedule: table properties, fractional time, sigma <-> t, q_sample, timestep grids."""

import math

import pytest
import torch

from mnist_diffusion.diffusion.schedule import karras_timesteps, make_schedule, timestep_grid
from mnist_diffusion.errors import UserError


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 100])
def test_tables_are_float64_and_alpha_bar_decreases_inside_unit_interval(name, T):
    s = make_schedule(name, T)
    assert s.timesteps == T
    assert s.betas.dtype == s.alphas_cumprod.dtype == torch.float64
    assert s.betas.shape == s.alphas_cumprod.shape == (T,)
    assert torch.all((s.betas > 0) & (s.betas < 1))
    ab = s.alphas_cumprod
    assert torch.all((ab > 0) & (ab < 1))
    assert torch.all(ab[1:] < ab[:-1])
    torch.testing.assert_close(ab, torch.cumprod(1 - s.betas, 0), rtol=0, atol=0)


def test_linear_endpoints_scale_with_T():
    s = make_schedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    s = make_schedule("linear", 250)  # 4x fewer steps, 4x larger betas: same total noise
    assert s.betas[0].item() == pytest.approx(4e-4, rel=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.08, rel=1e-12)
    assert torch.all(s.betas[1:] > s.betas[:-1])


def test_cosine_follows_its_closed_form_and_clips_the_last_beta():
    T, off = 1000, 0.008
    s = make_schedule("cosine", T)

    def f(t):
        return math.cos((t / T + off) / (1 + off) * math.pi / 2) ** 2

    assert s.alpha_bar(0).item() > 0.9999
    for t in [0, 1, 10, 500, 900, T - 2]:  # alpha_bar_t = f(t + 1) / f(0) before any clipping
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)
    assert s.betas[-1].item() == pytest.approx(0.999)


def test_bad_schedule_arguments_are_user_errors_naming_the_value():
    with pytest.raises(UserError, match="'quadratic'.*linear, cosine"):
        make_schedule("quadratic")
    with pytest.raises(UserError, match="timesteps"):
        make_schedule("linear", 1)
    with pytest.raises(UserError, match="timesteps=10"):
        make_schedule("linear", 10)  # beta_end = 2 would not be a probability


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_fractional_alpha_bar_interpolates_log_alpha_bar(name):
    s = make_schedule(name)
    ints = torch.arange(1000)
    # Integer times, given as ints or floats, read the table exactly.
    assert torch.equal(s.alpha_bar(ints), s.alphas_cumprod)
    assert torch.equal(s.alpha_bar(ints.double()), s.alphas_cumprod)
    # Halfway in log(alpha_bar) is the geometric mean of the neighbours.
    mid = s.alpha_bar(torch.tensor([10.5, 500.5, 998.5]))
    lo, hi = s.alphas_cumprod[[10, 500, 998]], s.alphas_cumprod[[11, 501, 999]]
    torch.testing.assert_close(mid, (lo * hi).sqrt(), rtol=1e-12, atol=0)
    fine = s.alpha_bar(torch.linspace(0, 999, 7993, dtype=torch.float64))
    assert torch.all(fine[1:] < fine[:-1])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_sigma_snr_and_their_inverse(name):
    s = make_schedule(name)
    t = torch.tensor([0.0, 0.25, 3.0, 17.7, 400.0, 998.9, 999.0], dtype=torch.float64)
    ab = s.alpha_bar(t)
    torch.testing.assert_close(s.sigma(t) ** 2, (1 - ab) / ab, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.snr(t), 1 / s.sigma(t) ** 2, rtol=1e-10, atol=0)
    torch.testing.assert_close(s.log_snr(t), torch.log(s.snr(t)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.t_from_sigma(s.sigma(t)), t, rtol=0, atol=1e-8)
    # Levels beyond the schedule map to its ends.
    assert s.t_from_sigma(torch.tensor([1e-9, 1e9])).tolist() == [0.0, 999.0]


def test_timesteps_outside_the_schedule_are_refused():
    s = make_schedule("linear")
    with pytest.raises(UserError, match="1000"):
        s.alpha_bar(torch.tensor([1000]))
    with pytest.raises(UserError, match="-0.5"):
        s.alpha_bar(-0.5)


def test_q_sample_is_the_closed_form_with_the_right_moments():
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.full((n, 1, 2, 2), 0.7)
    t = torch.full((n,), 300, dtype=torch.long)
    eps = torch.randn(x0.shape, generator=g)
    x_t = s.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float32 and x_t.shape == x0.shape
    ab = s.alphas_cumprod[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=0.01)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.01)
    # Per-sample timesteps broadcast over (C, H, W).
    t = torch.tensor([0, 999])
    x0, eps = torch.ones(2, 1, 2, 2), torch.full((2, 1, 2, 2), -1.0)
    x_t = s.q_sample(x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        a = s.alphas_cumprod[ti].item()
        torch.testing.assert_close(x_t[i], torch.full((1, 2, 2), math.sqrt(a) - math.sqrt(1 - a)))


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("T", [1000, 64])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 25, 63, 64, 999, 1000])
def test_grids_are_descending_unique_in_range_with_the_right_ends(spacing, T, steps):
    if steps > T:
        with pytest.raises(UserError, match=str(steps)):
            timestep_grid(T, steps, spacing)
        return
    grid = timestep_grid(T, steps, spacing)
    assert grid.dtype == torch.long and grid.shape == (steps,)
    assert torch.all(grid[1:] < grid[:-1])  # strictly descending, hence unique
    assert grid.min() >= 0 and grid.max() <= T - 1
    if spacing == "trailing":
        assert grid[0] == T - 1
        assert grid[-1] == round(T / steps) - 1
    elif spacing == "linspace":
        assert grid[0] == T - 1
        assert grid[-1] == (0 if steps > 1 else T - 1)
    else:
        assert grid[-1] == 0
        assert grid[0] == (steps - 1) * (T // steps)
    if steps == T:
        assert grid.tolist() == list(range(T - 1, -1, -1))


def test_grids_match_lin_et_al_table_2():
    assert timestep_grid(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timestep_grid(1000, 10, "linspace").tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert timestep_grid(1000, 10, "trailing").tolist() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_bad_grid_arguments_name_the_value_and_choices():
    with pytest.raises(UserError, match="'uniform'.*leading, linspace, trailing"):
        timestep_grid(1000, 10, "uniform")
    with pytest.raises(UserError, match="got 0"):
        timestep_grid(1000, 0, "trailing")


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_karras_grid_is_even_in_sigma_to_the_one_over_rho(name):
    s = make_schedule(name)
    t = karras_timesteps(s, 12, rho=7.0)
    assert t.dtype == torch.float64 and t.shape == (12,)
    assert torch.all(t[1:] < t[:-1]) and t[-1] == 0
    root = s.sigma(t) ** (1 / 7)
    even = torch.full((11,), root.diff().mean().item(), dtype=torch.float64)
    torch.testing.assert_close(root.diff(), even, rtol=1e-6, atol=0)
    assert s.sigma(t[0]).item() == pytest.approx(min(80.0, s.sigma(999).item()), rel=1e-9)
    assert karras_timesteps(s, 5, sigma_max=None)[0].item() == pytest.approx(999.0)
