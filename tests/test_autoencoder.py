"""The latent-diffusion autoencoder: shapes, the KL term, the loss, and the latent U-Net's shapes."""

import pytest
import torch

from mnist_diffusion.config import ConfigError, ModelConfig
from mnist_diffusion.models import build_model
from mnist_diffusion.models.autoencoder import Autoencoder
from mnist_diffusion.models.unet import UNet
from mnist_diffusion.training.objectives import autoencoder_loss, kl_to_standard_normal

torch.set_num_threads(1)


def tiny(in_channels=1, latent_channels=4, **kw):
    return ModelConfig(
        kind="autoencoder", in_channels=in_channels, channels=(8, 16, 16), latent_channels=latent_channels, **kw
    )


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("latent_channels", [4, 2])
def test_encoder_decoder_shapes(in_channels, latent_channels):
    net = build_model(tiny(in_channels, latent_channels))
    assert isinstance(net, Autoencoder) and net.latent_shape == (latent_channels, 7, 7)
    x = torch.randn(5, in_channels, 28, 28)
    mean, logvar = net.encode(x)
    assert mean.shape == logvar.shape == (5, latent_channels, 7, 7)
    assert net.decode(mean).shape == (5, in_channels, 28, 28)
    x_hat, m2, _ = net(x, torch.Generator().manual_seed(0))
    assert x_hat.shape == x.shape and torch.equal(m2, mean)
    assert net.decode(mean * 1e3).abs().max() <= 1.0  # tanh output: always inside the signed data range


def test_shape_errors_are_clear():
    net = build_model(tiny())
    with pytest.raises(ValueError, match=r"takes \(1, 28, 28\) images"):
        net.encode(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"latents of shape \(4, 7, 7\)"):
        net.decode(torch.zeros(1, 3, 7, 7))
    with pytest.raises(ConfigError, match="three widths"):
        build_model(ModelConfig(kind="autoencoder", channels=(8, 16)))


def test_reparameterised_sample_follows_the_generator():
    net = build_model(tiny())
    x = torch.randn(2, 1, 28, 28)
    a = net(x, torch.Generator().manual_seed(3))[0]
    b = net(x, torch.Generator().manual_seed(3))[0]
    c = net(x, torch.Generator().manual_seed(4))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zeros = torch.zeros(3, 4, 7, 7)
    assert torch.allclose(kl_to_standard_normal(zeros, zeros), torch.zeros(3))
    # KL(N(1, 1) || N(0, 1)) = 1/2 per element
    assert torch.allclose(kl_to_standard_normal(torch.ones(1, 4, 7, 7), zeros[:1]), torch.tensor([98.0]))
    assert (kl_to_standard_normal(zeros, torch.full((3, 4, 7, 7), -2.0)) > 0).all()


def test_loss_trains_the_reconstruction():
    torch.manual_seed(0)
    net = build_model(tiny())
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(15):
        out = autoencoder_loss(net, x, kl_weight=1e-6, generator=g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["l1"].item()
    assert set(out) == {"loss", "l1", "kl"} and out["l1"].item() < first


@pytest.mark.parametrize("channels", [(16,), (16, 32), (16, 32, 32)])
def test_latent_unet_keeps_the_7x7_shape(channels):
    net = UNet(ModelConfig(kind="unet", in_channels=4, channels=channels, num_classes=10, mid_block=False))
    z, t = torch.randn(3, 4, 7, 7), torch.tensor([0.0, 500.0, 999.0])
    out = net(z, t, torch.tensor([1, 2, 10]))
    assert out.shape == z.shape and torch.equal(out, torch.zeros_like(out))  # zero-initialised output conv
    torch.nn.init.normal_(net.out_conv.weight)
    assert net(z, t, None).abs().sum() > 0


def test_autoencoder_run_needs_the_signed_range(tmp_path, capsys):
    from mnist_diffusion.cli import main

    out = tmp_path / "ae"
    assert (
        main(
            [
                "train",
                "--recipe",
                "ldm-ae",
                "--limit",
                "64",
                "--max-steps",
                "1",
                "--out",
                str(out),
                "--set",
                "data.value_range=unit",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "data.value_range=signed" in capsys.readouterr().err and not out.exists()
