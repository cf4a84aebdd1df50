"""The denoiser wrapper: eps/x0/v conversions, clipping and classifier-free guidance."""

import pytest
import torch

from mnist_diffusion.diffusion.denoiser import (
    Denoiser,
    eps_from_v,
    eps_from_x0,
    target_for,
    to_x0_eps,
    v_from_x0_eps,
    x0_from_eps,
    x0_from_v,
)
from mnist_diffusion.diffusion.schedule import make_schedule
from mnist_diffusion.errors import UserError


def _pair(seed=0, n=6):
    """Random (x0, eps, alpha, sigma, x_t) in float64 with per-sample alpha in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 2, 3, 3, generator=g, dtype=torch.float64)
    ab = torch.rand(n, generator=g, dtype=torch.float64).clamp(0.01, 0.99).view(-1, 1, 1, 1)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    return x0, eps, alpha, sigma, alpha * x0 + sigma * eps


def test_eps_x0_v_round_trips():
    x0, eps, alpha, sigma, x_t = _pair()
    v = v_from_x0_eps(x0, eps, alpha, sigma)
    torch.testing.assert_close(x0_from_eps(x_t, eps, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, alpha, sigma), eps)
    torch.testing.assert_close(x0_from_v(x_t, v, alpha, sigma), x0)
    torch.testing.assert_close(eps_from_v(x_t, v, alpha, sigma), eps)
    # v is the velocity of x_t along the quarter circle (alpha, sigma) = (cos phi, sin phi).
    phi = torch.atan2(sigma, alpha)
    dphi = 1e-6
    x_next = torch.cos(phi + dphi) * x0 + torch.sin(phi + dphi) * eps
    torch.testing.assert_close((x_next - x_t) / dphi, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_to_x0_eps_inverts_each_target(prediction):
    x0, eps, alpha, sigma, x_t = _pair(1)
    out = target_for(prediction, x0, eps, alpha, sigma)
    got_x0, got_eps = to_x0_eps(x_t, out, prediction, alpha, sigma)
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)


class ToyNet:
    """A conditional net whose output depends on x_t, t and the label; records every call."""

    def __init__(self, num_classes=10):
        self.num_classes = num_classes
        self.calls = []

    def __call__(self, x_t, t, labels):
        self.calls.append((x_t.shape[0], t.clone(), None if labels is None else labels.clone()))
        lab = torch.zeros(x_t.shape[0]) if labels is None else labels.float()
        return 0.5 * x_t + 0.001 * t.view(-1, 1, 1, 1) + 0.1 * lab.view(-1, 1, 1, 1)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_net_output_becomes_consistent_x0_and_eps(prediction):
    s = make_schedule("cosine")
    den = Denoiser(ToyNet(0), s, prediction)
    x_t = torch.randn(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 10, 500, 999])
    x0, eps = den(x_t, t)
    assert x0.shape == eps.shape == x_t.shape and x0.dtype == torch.float32
    alpha, sigma = s.coefficients(t, x_t)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x_t, rtol=1e-4, atol=1e-4)
    # The net saw float timesteps; a scalar t means the same t for every sample.
    assert den.net.calls[0][1].dtype == torch.float32 and den.net.calls[0][1].tolist() == [0, 10, 500, 999]
    x0_s, eps_s = den(x_t[1:2], 10)
    torch.testing.assert_close(x0_s, x0[1:2])
    torch.testing.assert_close(eps_s, eps[1:2])


def test_clip_keeps_x0_in_range_and_eps_consistent():
    s = make_schedule("linear")
    den = Denoiser(lambda x, t, y: 5 * x, s, "x0", clip=(-1.0, 1.0))
    x_t = torch.linspace(-2, 2, 50).view(2, 1, 5, 5)
    t = torch.tensor([200, 700])
    x0, eps = den(x_t, t)
    assert x0.min() >= -1 and x0.max() <= 1 and (x0.abs() == 1).any()
    alpha, sigma = s.coefficients(t, x_t)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x_t, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_guidance_is_one_batched_pass_combined_in_eps(prediction):
    s = make_schedule("linear")
    net = ToyNet(10)
    den = Denoiser(net, s, prediction)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 1, 4, 4, generator=g)
    labels = torch.tensor([1, 7, 3])
    t = torch.tensor([5, 400, 999])
    _, eps_c = den.bind(labels)(x_t, t)
    _, eps_u = den.bind(torch.full((3,), 10))(x_t, t)
    net.calls.clear()
    w = 3.0
    x0, eps = den.bind(labels, guidance=w)(x_t, t)
    assert len(net.calls) == 1 and net.calls[0][0] == 6  # one forward, conditional and unconditional halves
    assert net.calls[0][2].tolist() == [1, 7, 3, 10, 10, 10]
    torch.testing.assert_close(eps, eps_u + w * (eps_c - eps_u), rtol=1e-5, atol=1e-5)
    alpha, sigma = s.coefficients(t, x_t)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x_t, rtol=1e-5, atol=1e-5)


def test_guidance_scale_one_is_the_plain_conditional_call():
    s = make_schedule("linear")
    net = ToyNet(10)
    den = Denoiser(net, s, "v")
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 4, 9])
    plain = net(x_t, torch.full((3,), 250.0), labels)
    net.calls.clear()
    x0, eps = den.bind(labels, guidance=1.0)(x_t, 250)
    assert len(net.calls) == 1 and net.calls[0][0] == 3 and net.calls[0][2].tolist() == [0, 4, 9]
    alpha, sigma = s.coefficients(250, x_t)
    torch.testing.assert_close(x0, x0_from_v(x_t, plain, alpha, sigma))
    torch.testing.assert_close(eps, eps_from_v(x_t, plain, alpha, sigma))


def test_conditional_net_without_labels_gets_the_no_label_class():
    net = ToyNet(10)
    Denoiser(net, make_schedule("linear"))(torch.zeros(2, 1, 2, 2), 3)
    assert net.calls[0][2].tolist() == [10, 10]


def test_guidance_misuse_is_a_user_error():
    s = make_schedule("linear")
    with pytest.raises(UserError, match="unconditional"):
        Denoiser(ToyNet(0), s, labels=torch.tensor([1, 2]), guidance=2.0)
    with pytest.raises(UserError, match="labels"):
        Denoiser(ToyNet(10), s).bind(None, guidance=2.0)
    with pytest.raises(UserError, match="finite"):
        Denoiser(ToyNet(10), s).bind(torch.tensor([1, 2]), guidance=float("nan"))
    with pytest.raises(UserError, match="'score'.*eps, x0, v"):
        Denoiser(ToyNet(0), s, "score")


def test_guidance_interval_guides_only_between_its_noise_levels():
    s = make_schedule("linear")
    net = ToyNet(10)
    labels = torch.tensor([1, 7])
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    den = Denoiser(net, s, labels=labels, guidance=3.0, guidance_interval=(0.5, 2.0))
    for t in (50, 300, 600, 900):
        level = s.sigma(t).item()
        net.calls.clear()
        _, eps = den(x_t, t)
        inside = 0.5 < level <= 2.0
        assert net.calls[0][0] == (4 if inside else 2), (t, level)
        want = (den if inside else den.bind(labels))(x_t, t)[1]
        torch.testing.assert_close(eps, want)
    # Per-sample timesteps that straddle the interval: guided where inside, plain conditional elsewhere.
    t = torch.tensor([50, 300])
    assert s.sigma(50).item() < 0.5 < s.sigma(300).item() <= 2.0
    _, eps = den(x_t, t)
    _, guided = Denoiser(net, s, labels=labels, guidance=3.0)(x_t, t)
    _, plain = den.bind(labels)(x_t, t)
    torch.testing.assert_close(eps[0], plain[0])
    torch.testing.assert_close(eps[1], guided[1])


class WeakToyNet(ToyNet):
    """Another conditional net of the same kind, pulled towards 0: the 'bad version' autoguidance steers away from."""

    def __call__(self, x_t, t, labels):
        return 0.5 * super().__call__(x_t, t, labels)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_autoguidance_extrapolates_from_the_weaker_model_with_the_same_labels(prediction):
    s = make_schedule("linear")
    net, weak = ToyNet(10), WeakToyNet(10)
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    labels, t, w = torch.tensor([2, 5, 8]), torch.tensor([30, 500, 990]), 2.5
    _, eps_c = Denoiser(net, s, prediction, labels=labels)(x_t, t)
    _, eps_g = Denoiser(weak, s, prediction, labels=labels)(x_t, t)
    net.calls.clear(), weak.calls.clear()
    x0, eps = Denoiser(net, s, prediction, labels=labels, guidance=w, guide=weak)(x_t, t)
    torch.testing.assert_close(eps, eps_g + w * (eps_c - eps_g), rtol=1e-5, atol=1e-5)
    alpha, sigma = s.coefficients(t, x_t)
    torch.testing.assert_close(alpha * x0 + sigma * eps, x_t, rtol=1e-5, atol=1e-5)
    # one conditional pass of each network, the guide with the same labels (no unconditional pass)
    assert [c[2].tolist() for c in net.calls] == [[2, 5, 8]] == [c[2].tolist() for c in weak.calls]
    # a model guiding itself is no guidance at all; guidance 1 never calls the guide
    same, _ = Denoiser(net, s, prediction, labels=labels, guidance=w, guide=net)(x_t, t)
    plain, _ = Denoiser(net, s, prediction, labels=labels)(x_t, t)
    torch.testing.assert_close(same, plain)
    weak.calls.clear()
    Denoiser(net, s, prediction, labels=labels, guidance=1.0, guide=weak)(x_t, t)
    assert weak.calls == []
    with pytest.raises(UserError, match="Autoguidance needs"):
        Denoiser(net, s, prediction, guide=ToyNet(0))
