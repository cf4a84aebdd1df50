"""The packaged models sample from their names alone; the speed-oriented sampling defaults change no image."""

import numpy as np
import pytest
import torch

from mnist_diffusion.generate import generate, initial_noise, load_model, sample_batch


@pytest.fixture(scope="module")
def pixel():
    return load_model()  # the packaged ddpm-cond


def test_packaged_models_sample_the_requested_digits(pixel):
    for model in (pixel, load_model("ldm")):
        images, labels = generate(model, 3, steps=2, labels="3,5,8")
        assert images.dtype == np.uint8 and images.shape == (3, 28, 28)
        assert labels.tolist() == [3, 5, 8]
        assert model.cfg.latent is None or model.autoencoder is not None


def test_sampling_layout_is_channels_last_and_changes_nothing(pixel):
    net = pixel.net
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x_T = initial_noise(4, (1, 28, 28), seed=0, kind="gaussian", device=torch.device("cpu"))
    labels = torch.tensor([0, 1, 2, 3])
    nhwc = sample_batch(pixel, x_T, labels, "dpmpp_2m", 3, 2.0, "trailing", None)
    net.to(memory_format=torch.contiguous_format)
    try:
        nchw = sample_batch(pixel, x_T, labels, "dpmpp_2m", 3, 2.0, "trailing", None)
    finally:
        net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc, nchw, atol=1e-4, rtol=1e-4)


def test_batch_size_does_not_change_deterministic_samples(pixel):
    a, _ = generate(pixel, 5, steps=2, batch_size=2)
    b, _ = generate(pixel, 5, steps=2, batch_size=5)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # rounding to uint8 may flip a level
