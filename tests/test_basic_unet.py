import torch

from mnist_diffusion.models import count_parameters
from mnist_diffusion.models.basic_unet import BasicUNet


def test_parameter_count_is_the_seeds():
    assert count_parameters(BasicUNet()) == 309_057


def test_shapes_and_channels():
    assert BasicUNet()(torch.rand(3, 1, 28, 28)).shape == (3, 1, 28, 28)
    assert BasicUNet(3, 3)(torch.rand(2, 3, 28, 28)).shape == (2, 3, 28, 28)


def test_layers_are_the_seeds():
    net = BasicUNet()
    shapes = [(c.in_channels, c.out_channels, c.kernel_size) for c in [*net.down_layers, *net.up_layers]]
    assert shapes == [
        (1, 32, (5, 5)),
        (32, 64, (5, 5)),
        (64, 64, (5, 5)),
        (64, 64, (5, 5)),
        (64, 32, (5, 5)),
        (32, 1, (5, 5)),
    ]


def test_output_is_silu_bounded_below():
    # SiLU after the last conv (as in the seed) bounds outputs below by about -0.278.
    out = BasicUNet()(torch.randn(4, 1, 28, 28) * 10)
    assert out.min() >= -0.2785
