"""Samplers against the exact denoiser of Gaussian data, plus their bookkeeping (grid, NFE, noise, errors)."""

import math

import pytest
import torch

from mnist_diffusion.cli import build_parser
from mnist_diffusion.cli.options import sampler_help
from mnist_diffusion.config import ConfigError, SampleConfig
from mnist_diffusion.diffusion import samplers
from mnist_diffusion.diffusion.denoiser import Denoiser, target_for
from mnist_diffusion.diffusion.samplers import SAMPLERS, sample, sample_ddim, sample_ddpm, sample_tutorial
from mnist_diffusion.diffusion.schedule import karras_timesteps, make_schedule, timestep_grid
from mnist_diffusion.errors import UserError
from mnist_diffusion.recipes import RECIPES

MU, S = 0.4, 0.5  # per-pixel data distribution N(MU, S^2)
N = 4000
OVER_DENOISER = [n for n, spec in SAMPLERS.items() if "ddpm" in spec.kinds]  # over DDPM's grid (flows: test_flow.py)


class GaussianNet:
    """The exact eps / x0 / v prediction for data x0 ~ N(MU, S^2) under `schedule`, at any (fractional) t.

    With x_t = a x0 + b eps: E[x0 | x_t] = MU + a S^2 / (a^2 S^2 + b^2) (x_t - a MU).
    """

    def __init__(self, schedule, prediction="eps", num_classes=0):
        self.schedule, self.prediction, self.num_classes = schedule, prediction, num_classes
        self.calls = []

    def __call__(self, x_t, t, labels=None):
        self.calls.append((x_t.shape[0], labels))
        ab = self.schedule.alpha_bar(t).view(-1, 1, 1, 1)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        x = x_t.double()
        x0 = MU + a * S**2 / (a**2 * S**2 + b**2) * (x - a * MU)
        eps = (x - a * x0) / b
        return target_for(self.prediction, x0, eps, a, b).to(x_t.dtype)


def _noise(seed=0, n=N, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 1, 1, generator=g, dtype=dtype), g


# First-order samplers need more steps than second-order ones for the same accuracy; Heun and
# DPM-Solver++ do best on Karras' grid, DDPM/DDIM on a grid that reaches t=0.
SETTINGS = {
    "ddpm": (250, "linspace"),
    "ddim": (100, "linspace"),
    "dpmpp_2m": (25, "karras"),
    "heun": (25, "karras"),
}


@pytest.mark.parametrize("name", [n for n in OVER_DENOISER if n != "consistency"])  # its own: tests/test_distill.py
@pytest.mark.parametrize("schedule_name,prediction", [("linear", "eps"), ("cosine", "v"), ("linear", "x0")])
def test_every_sampler_reproduces_gaussian_data(name, schedule_name, prediction):
    torch.set_num_threads(1)
    s = make_schedule(schedule_name)
    den = Denoiser(GaussianNet(s, prediction), s, prediction)
    x_T, g = _noise()
    steps, spacing = SETTINGS[name]
    x = sample(name, den, x_T, steps, spacing=spacing, generator=g)
    assert x.shape == x_T.shape and x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(MU, abs=4 * S / math.sqrt(N))
    assert x.std().item() == pytest.approx(S, rel=0.05)


@pytest.mark.parametrize("name,order", [("ddim", 1), ("dpmpp_2m", 2), ("heun", 2)])
def test_deterministic_samplers_converge_to_the_exact_flow_at_their_order(name, order):
    # For Gaussian data the probability-flow ODE keeps z = (x_t - a MU) / sqrt(a^2 S^2 + b^2) fixed,
    # so from x at the first grid point it ends at MU + S z, sample by sample.
    torch.set_num_threads(1)
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s, "eps")
    x_T, _ = _noise(n=300, dtype=torch.float64)
    errors = []
    for steps in (20, 40, 80):
        grid = karras_timesteps(s, steps)
        ab = s.alpha_bar(grid[0]).item()
        exact = MU + S * (x_T - math.sqrt(ab) * MU) / math.sqrt(ab * S**2 + 1 - ab)
        errors.append((SAMPLERS[name].function(den, x_T, grid) - exact).abs().max().item())
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]  # about 2^order when the step halves
    assert all(2**order * 0.8 < r < 2**order * 1.4 for r in ratios), (errors, ratios)
    assert errors[-1] < (0.06 if order == 1 else 0.005)


@pytest.mark.parametrize("name", OVER_DENOISER)
def test_the_three_parametrisations_give_the_same_samples(name):
    s = make_schedule("cosine")
    outs = []
    for prediction in ["eps", "x0", "v"]:
        x_T, g = _noise(3, n=200, dtype=torch.float64)
        outs.append(sample(name, Denoiser(GaussianNet(s, prediction), s, prediction), x_T, 20, generator=g))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-6, atol=1e-6)


def test_ddim_eta_zero_is_deterministic_and_leaves_the_generator_alone():
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=50)
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    a = sample("ddim", den, x_T, 10, generator=g)
    assert torch.equal(g.get_state(), state)
    b = sample("ddim", den, x_T, 10, generator=torch.Generator().manual_seed(999))
    c = sample("ddim", den, x_T, 10)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_ddpm_is_seeded_and_equals_ddim_with_eta_one():
    s = make_schedule("cosine")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=100, dtype=torch.float64)
    grid = timestep_grid(1000, 15, "trailing")
    a = sample_ddpm(den, x_T, grid, generator=torch.Generator().manual_seed(1))
    b = sample_ddpm(den, x_T, grid, generator=torch.Generator().manual_seed(1))
    c = sample_ddpm(den, x_T, grid, generator=torch.Generator().manual_seed(2))
    d = sample_ddim(den, x_T, grid, generator=torch.Generator().manual_seed(1), eta=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(a, d, rtol=1e-9, atol=1e-9)


def test_ddpm_on_consecutive_steps_is_ho_algorithm_2():
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=64, dtype=torch.float64)
    got = sample_ddpm(den, x_T, [5, 4, 3, 2, 1, 0], generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    x = x_T
    for t in [5, 4, 3, 2, 1, 0]:
        beta, ab = s.betas[t].item(), s.alphas_cumprod[t].item()
        ab_prev = s.alphas_cumprod[t - 1].item() if t > 0 else 1.0
        _, eps = den(x, t)
        x = (x - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta)
        if t > 0:  # sigma_t^2 = beta-tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
            z = torch.randn(x.shape, generator=g, dtype=x.dtype)
            x = x + math.sqrt(beta * (1 - ab_prev) / (1 - ab)) * z
    torch.testing.assert_close(got, x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", OVER_DENOISER)
@pytest.mark.parametrize(
    "grid",
    [
        timestep_grid(1000, 7, "trailing"),
        timestep_grid(1000, 7, "leading"),
        timestep_grid(1000, 1, "trailing"),
        [999.0, 612.25, 80.5, 3.0],
    ],
    ids=["trailing", "leading", "one-step", "fractional"],
)
def test_callback_sees_exactly_the_grid_and_the_result_is_the_last_x0(name, grid):
    s = make_schedule("linear")
    net = GaussianNet(s)
    den = Denoiser(net, s)
    seen = []
    x_T, g = _noise(n=8)

    def callback(step):
        assert step["steps"] == len(grid) and step["denoised"] is step["x0"]
        seen.append((step["i"], step["t"], step["x_t"], step["x0"]))

    out = SAMPLERS[name].function(den, x_T, grid, generator=g, callback=callback)
    expected = grid.tolist() if torch.is_tensor(grid) else grid
    assert [i for i, *_ in seen] == list(range(len(expected)))
    assert [t for _, t, *_ in seen] == expected
    assert torch.equal(seen[0][2], x_T)
    assert torch.equal(out, seen[-1][3])  # the last step lands on the data: x = x0 prediction
    assert len(net.calls) == SAMPLERS[name].evaluations(len(expected))


def test_guidance_and_labels_reach_the_network_in_one_batch():
    s = make_schedule("linear")
    net = GaussianNet(s, num_classes=10)
    den = Denoiser(net, s)
    x_T, _ = _noise(n=4)
    labels = torch.tensor([0, 3, 3, 9])
    plain = sample("dpmpp_2m", den.bind(labels), x_T, 5)
    assert all(b == 4 and torch.equal(y, labels) for b, y in net.calls)
    net.calls.clear()
    guided = sample("dpmpp_2m", den.bind(labels, guidance=4.0), x_T, 5)
    assert len(net.calls) == 5 and all(b == 8 for b, _ in net.calls)
    assert net.calls[0][1].tolist() == [0, 3, 3, 9, 10, 10, 10, 10]
    torch.testing.assert_close(guided, plain)  # this net ignores labels, so guidance changes nothing


def test_dispatcher_errors_name_the_value_and_the_choices():
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x = torch.zeros(2, 1, 1, 1)
    with pytest.raises(UserError, match="'euler'.*ddpm, ddim, dpmpp_2m, heun"):
        sample("euler", den, x, 10)
    with pytest.raises(UserError, match="got 0"):
        sample("ddim", den, x, 0)
    with pytest.raises(UserError, match="'even'.*leading, linspace, trailing"):
        sample("ddim", den, x, 10, spacing="even")
    with pytest.raises(UserError, match="eta=0.5.*'heun'"):
        sample("heun", den, x, 10, eta=0.5)
    with pytest.raises(UserError, match="unconditional"):
        den.bind(torch.tensor([1, 2]))
    cond = Denoiser(GaussianNet(s, num_classes=10), s)
    with pytest.raises(UserError, match=r"\[0, 10\]"):
        cond.bind(torch.tensor([1, 11]))
    with pytest.raises(UserError, match="strictly descending"):
        sample_ddim(den, x, [10, 500])


@pytest.mark.parametrize("name", OVER_DENOISER)
def test_clipping_denoiser_keeps_samples_in_the_data_range(name):
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s, clip=(0.0, 1.0))  # N(0.4, 0.5^2) spills over both ends
    x_T, g = _noise(n=500)
    x = sample(name, den, x_T, 10, generator=g)
    assert x.min() == 0.0 and x.max() == 1.0


@pytest.mark.parametrize("name", OVER_DENOISER)
def test_a_callback_that_returns_x_t_unchanged_changes_nothing_and_a_replacement_steers(name):
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=200, dtype=torch.float64)
    grid = timestep_grid(1000, 10, "trailing")
    plain = SAMPLERS[name].function(den, x_T, grid, generator=torch.Generator().manual_seed(0))
    same = SAMPLERS[name].function(
        den, x_T, grid, generator=torch.Generator().manual_seed(0), callback=lambda step: step["x_t"].clone()
    )
    torch.testing.assert_close(same, plain, rtol=1e-12, atol=1e-12)

    # Replacement (Song et al. 2021): at every step put x_t back on the noised path of the known value 0.9
    # for the first half of the batch; the samples there are drawn towards it, the rest are untouched.
    def known(step):
        ab = s.alpha_bar(torch.tensor(step["t"])).item()
        x = step["x_t"].clone()
        x[:100] = math.sqrt(ab) * 0.9 + math.sqrt(1 - ab) * x_T[:100]
        return x

    steered = SAMPLERS[name].function(den, x_T, grid, generator=torch.Generator().manual_seed(0), callback=known)
    assert abs(steered[:100].mean() - 0.9) + 0.05 < abs(plain[:100].mean() - 0.9)
    if name != "ddpm":  # ancestral noise is drawn for the whole batch, so the other half sees other noise
        torch.testing.assert_close(steered[100:], plain[100:], rtol=1e-12, atol=1e-12)


def test_the_tutorial_sampler_shares_the_callback_contract():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []

    def callback(step):
        seen.append((step["i"], step["t"], step["steps"]))
        return torch.zeros_like(step["x_t"]) if step["i"] == 0 else None

    calls = []
    net = lambda z: calls.append(z) or 0.5 * z + 0.1
    out = sample_tutorial(net, x, 4, callback=callback)
    assert len(calls) == SAMPLERS["tutorial"].evaluations(4)
    assert seen == [(0, 1.0, 4), (1, 0.75, 4), (2, 0.5, 4), (3, 0.25, 4)]
    # Step 0 goes on from the replacement (zeros) with its prediction net(x), mix 1/4; the rest is a 3-step run.
    torch.testing.assert_close(out, sample_tutorial(net, net(x) / 4, 3))


def test_every_sampler_is_offered_by_the_config_check_the_cli_and_the_registry():
    parser = build_parser()
    sample_cmd = parser._subparsers._group_actions[0].choices["sample"]
    sampler_flag = next(a for a in sample_cmd._actions if a.dest == "sampler")
    for name, spec in SAMPLERS.items():
        assert samplers.get(name) is spec and name in samplers.names()
        assert f"{name} ({spec.description})" in sampler_help() and name in sampler_flag.choices
        assert sampler_help() == sampler_flag.help
        for kind in spec.kinds:
            assert name in samplers.names(kind)
            assert samplers.check_settings(SampleConfig(sampler=name), kind) is spec
            with pytest.raises(ConfigError) as refused:  # the refusal names every sampler the kind accepts
                samplers.check_settings(SampleConfig(sampler="magic"), kind)
            assert f"'magic' for a model of diffusion kind '{kind}'" in str(refused.value)
            assert name in str(refused.value).split("choose one of: ")[1].rstrip(".").split(", ")
        for other in {k for s in SAMPLERS.values() for k in s.kinds} - set(spec.kinds):
            with pytest.raises(ConfigError, match=f"The sampler '{name}' does not fit .* '{other}'"):
                samplers.check(name, other)


def test_a_kind_without_samplers_and_an_unknown_name_are_one_sentence_each():
    with pytest.raises(
        ConfigError, match="diffusion kind 'autoencoder' has no sampler; .*ddpm, flow, meanflow, tutorial"
    ):
        samplers.check("ddim", "autoencoder")
    with pytest.raises(ConfigError, match="Unknown sampler 'magic'; choose one of: ddpm, .*, tutorial"):
        samplers.get("magic")


def test_every_recipe_samples_with_a_sampler_of_its_kind():
    for recipe in RECIPES.values():
        if recipe.diffusion.kind != "autoencoder":
            samplers.check_settings(recipe.sample, recipe.diffusion.kind)


@pytest.mark.parametrize("name", OVER_DENOISER)
def test_stochastic_says_whether_the_generator_changes_the_result(name):
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=50)
    a, b = (sample(name, den, x_T, 5, generator=torch.Generator().manual_seed(seed)) for seed in (1, 2))
    assert torch.equal(a, b) != SAMPLERS[name].stochastic


@pytest.mark.parametrize("name", OVER_DENOISER)
def test_eta_is_taken_where_the_registry_says_and_refused_elsewhere(name):
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T, _ = _noise(n=8)
    if SAMPLERS[name].takes_eta:
        noisy = sample(name, den, x_T, 5, eta=0.5, generator=torch.Generator().manual_seed(1))
        assert not torch.equal(noisy, sample(name, den, x_T, 5))
        samplers.check_settings(SampleConfig(sampler=name, eta=0.5), "ddpm")
    else:
        with pytest.raises(UserError, match=f"eta=0.5 only applies to the ddim sampler, not '{name}'"):
            sample(name, den, x_T, 5, eta=0.5)
        with pytest.raises(ConfigError, match="only applies to the ddim sampler"):
            samplers.check_settings(SampleConfig(sampler=name, eta=0.5), "ddpm")


def test_resampling_is_refused_exactly_where_the_registry_says():
    for name, spec in SAMPLERS.items():
        if spec.can_resample:
            samplers.check_resample(name, spec.kinds[0])
        else:
            with pytest.raises(ConfigError, match=f"the '{name}' sampler cannot resample: use resample=1"):
                samplers.check_resample(name, spec.kinds[0])
    with pytest.raises(ConfigError, match="or sampler ddpm / ddim / dpmpp_2m.$"):
        samplers.check_resample("heun", "ddpm")


def test_only_the_distilled_models_sampler_is_left_out_for_ordinary_models():
    assert samplers.names("ddpm", for_any_model=True) == ("ddpm", "ddim", "dpmpp_2m", "heun")
    assert samplers.names("tutorial", for_any_model=True) == ("tutorial",)
    assert samplers.names("flow", for_any_model=True) == ("heun", "euler", "midpoint")


def test_the_dispatcher_refuses_the_tutorials_sampler_with_a_sentence():
    s = make_schedule("linear")
    with pytest.raises(UserError, match="takes the network itself.*sample_tutorial"):
        sample("tutorial", Denoiser(GaussianNet(s), s), torch.zeros(1, 1, 1, 1), 3)
