"""Training objectives: the DDPM loss (targets, min-SNR weights, label dropout) and the seed's pieces."""

import pytest
import torch

from mnist_diffusion.diffusion.ddpm_loss import diffusion_loss, drop_labels, min_snr_weight
from mnist_diffusion.diffusion.denoiser import target_for
from mnist_diffusion.diffusion.schedule import make_schedule
from mnist_diffusion.diffusion.tutorial import corrupt, sample_tutorial, tutorial_loss
from mnist_diffusion.errors import UserError


def test_min_snr_weights_per_prediction_type():
    snr = torch.tensor([0.5, 5.0, 50.0], dtype=torch.float64)
    expected = {"eps": [1.0, 1.0, 0.1], "x0": [0.5, 5.0, 5.0], "v": [0.5 / 1.5, 5 / 6, 5 / 51]}
    for prediction, weights in expected.items():
        got = min_snr_weight(snr, prediction, 5.0)
        torch.testing.assert_close(got, torch.tensor(weights, dtype=torch.float64))


class ZeroNet:
    num_classes = 0

    def __call__(self, x_t, t, labels):
        return torch.zeros_like(x_t)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_draws_t_then_eps_and_regresses_the_right_target(prediction):
    s = make_schedule("cosine")
    x0 = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    g = torch.Generator().manual_seed(0)
    loss, per_sample, t = diffusion_loss(ZeroNet(), x0, s, prediction, generator=g)
    replay = torch.Generator().manual_seed(0)
    t_ref = torch.randint(0, 1000, (8,), generator=replay)
    eps = torch.randn(x0.shape, generator=replay)
    alpha, sigma = s.coefficients(t_ref, x0)
    target = target_for(prediction, x0, eps, alpha, sigma)
    assert t.dtype == torch.long and torch.equal(t, t_ref)
    assert per_sample.shape == (8,) and loss.ndim == 0
    torch.testing.assert_close(per_sample, target.pow(2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(loss, per_sample.mean())


class X0GuessNet:
    """Predicts the same (wrong) x0_hat = tanh(x_t) in whichever parametrisation it is asked for."""

    def __init__(self, schedule, prediction):
        self.schedule, self.prediction, self.num_classes = schedule, prediction, 0

    def __call__(self, x_t, t, labels):
        alpha, sigma = self.schedule.coefficients(t, x_t)
        x0_hat = torch.tanh(x_t)
        eps_hat = (x_t - alpha * x0_hat) / sigma
        return target_for(self.prediction, x0_hat, eps_hat, alpha, sigma)


def test_min_snr_weighting_is_the_same_loss_in_every_parametrisation():
    s = make_schedule("linear")
    x0 = torch.rand(64, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(prediction, weighting):
        net = X0GuessNet(s, prediction)
        g = torch.Generator().manual_seed(7)
        return diffusion_loss(net, x0, s, prediction, weighting=weighting, gamma=5.0, generator=g)

    _, eps_loss, t = run("eps", "uniform")
    snr = s.snr(t).float()
    # Unweighted, the spaces differ by known SNR factors ...
    torch.testing.assert_close(run("x0", "uniform")[1], eps_loss / snr, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(run("v", "uniform")[1], eps_loss * (snr + 1) / snr, rtol=1e-4, atol=1e-9)
    # ... and min-SNR weighting undoes them: one objective, min(snr, gamma)/snr * ||eps err||^2.
    expected = eps_loss * snr.clamp(max=5.0) / snr
    for prediction in ["eps", "x0", "v"]:
        torch.testing.assert_close(run(prediction, "min_snr")[1], expected, rtol=1e-4, atol=1e-9)


class LabelNet:
    def __init__(self, num_classes):
        self.num_classes, self.seen = num_classes, None

    def __call__(self, x_t, t, labels):
        self.seen = labels
        return x_t * 0


def test_label_dropout_replaces_labels_by_the_no_label_class():
    x0 = torch.zeros(4000, 1, 1, 1)
    labels = torch.randint(0, 10, (4000,), generator=torch.Generator().manual_seed(0))
    original = labels.clone()
    net = LabelNet(10)
    s = make_schedule("linear")
    diffusion_loss(net, x0, s, labels=labels, label_dropout=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(net.seen, labels)
    diffusion_loss(net, x0, s, labels=labels, label_dropout=0.3, generator=torch.Generator().manual_seed(1))
    dropped = net.seen == 10
    assert 0.27 < dropped.float().mean().item() < 0.33
    assert torch.equal(net.seen[~dropped], labels[~dropped])
    assert torch.equal(labels, original)  # the caller's tensor is not modified
    unconditional = LabelNet(0)
    diffusion_loss(unconditional, x0, s, labels=labels, label_dropout=0.3)
    assert torch.equal(unconditional.seen, labels)
    assert torch.equal(drop_labels(labels, 10, 0.0), labels)


def test_bad_loss_settings_are_user_errors():
    s = make_schedule("linear")
    with pytest.raises(UserError, match="'snr'.*uniform, min_snr"):
        diffusion_loss(ZeroNet(), torch.zeros(2, 1, 2, 2), s, weighting="snr")
    with pytest.raises(UserError, match="'score'"):
        diffusion_loss(ZeroNet(), torch.zeros(2, 1, 2, 2), s, prediction="score")


def test_corrupt_blends_with_uniform_noise():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    amount = torch.tensor([0.0, 0.25, 1.0])
    out = corrupt(x, amount, torch.Generator().manual_seed(3))
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, x * (1 - amount.view(-1, 1, 1, 1)) + noise * amount.view(-1, 1, 1, 1))
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], noise[2])
    assert noise.min() >= 0 and noise.max() < 1
    torch.manual_seed(11)  # without a generator: torch.rand_like on the global generator, as the seed did
    a = corrupt(x, amount)
    torch.manual_seed(11)
    a4 = amount.view(-1, 1, 1, 1)
    torch.testing.assert_close(a, x * (1 - a4) + torch.rand_like(x) * a4)


def test_tutorial_loss_is_mse_to_the_clean_image_and_trains():
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    scale = torch.nn.Parameter(torch.tensor(1.0))
    loss = tutorial_loss(lambda z: scale * z, x, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)
    amount = torch.rand(5, generator=replay)
    noisy = corrupt(x, amount, replay)
    torch.testing.assert_close(loss, ((noisy - x) ** 2).mean())
    loss.backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_tutorial_sampler_mixes_one_over_remaining_steps_and_ends_on_the_prediction():
    steps, c = 6, 0.3
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    seen = []
    sample_tutorial(
        lambda z: torch.full_like(z, c), x, steps, callback=lambda s: seen.append((s["i"], s["x_t"], s["x0"]))
    )
    # A constant prediction c turns x <- x(1-m) + c m, m = 1/(steps - i), into a straight line to c.
    for k, (i, xi, p) in enumerate(seen):
        assert i == k
        torch.testing.assert_close(xi, c + (x - c) * (steps - k) / steps)
        assert torch.all(p == c)
    seen.clear()
    out = sample_tutorial(lambda z: 0.5 * z + 0.1, x, steps, callback=lambda s: seen.append(s["x0"]))
    assert len(seen) == steps and torch.equal(out, seen[-1])
    with pytest.raises(UserError, match="got 0"):
        sample_tutorial(lambda z: z, x, 0)
