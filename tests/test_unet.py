"""The time-conditioned U-Net: shapes, conditioning, initialisation, gradients, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mnist_diffusion.config import ModelConfig
from mnist_diffusion.models.blocks import ResBlock, timestep_embedding
from mnist_diffusion.models.kernels import repeat_resize
from mnist_diffusion.models.unet import UNet

# Small widths keep every test well under a second on one thread.
SMALL = {"channels": (8, 16, 32), "embed_dim": 32, "groups": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _net(**kw) -> UNet:
    torch.manual_seed(0)
    return UNet(ModelConfig(**{**SMALL, **kw}))


def _randomise_zero_init(net: UNet) -> None:
    """Give the zero-initialised output conv random weights so the output depends on everything upstream."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        net.out_conv.weight.copy_(torch.randn(net.out_conv.weight.shape, generator=g) * 0.1)
        net.out_conv.bias.copy_(torch.randn(net.out_conv.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_output_shape_matches_input(channels, num_classes):
    net = _net(in_channels=channels, num_classes=num_classes)
    x = torch.randn(4, channels, 28, 28)
    t = torch.tensor([0.0, 1.5, 499.25, 999.0])  # fractional timesteps are allowed
    labels = torch.tensor([0, 3, 7, 9]) if num_classes else None
    out = net(x, t, labels)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert net.num_classes == num_classes


def test_default_config_builds_and_runs():
    torch.manual_seed(0)
    net = UNet(ModelConfig(num_classes=10))
    n_params = sum(p.numel() for p in net.parameters())
    assert 1_000_000 <= n_params <= 3_000_000
    assert net(torch.randn(2, 1, 28, 28), torch.tensor([3.0, 900.0]), torch.tensor([1, 2])).shape == (2, 1, 28, 28)


def test_output_is_zero_at_construction():
    net = _net(num_classes=10)
    out = net(torch.randn(3, 1, 28, 28), torch.tensor([1.0, 10.0, 100.0]), torch.tensor([0, 1, 2]))
    assert torch.count_nonzero(out) == 0


def test_labels_none_means_the_no_label_entry():
    net = _net(num_classes=10)
    _randomise_zero_init(net)
    net.eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5.0, 700.0])
    no_label = torch.full((2,), 10, dtype=torch.long)
    torch.testing.assert_close(net(x, t, None), net(x, t, no_label), rtol=0, atol=0)
    assert net.label_emb.num_embeddings == 11


def test_unconditional_net_refuses_labels():
    net = _net(num_classes=0)
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(1, 1, 28, 28), torch.tensor([1.0]), torch.tensor([3]))


def test_class_label_changes_the_output():
    net = _net(num_classes=10)
    _randomise_zero_init(net)
    net.eval()
    x = torch.randn(1, 1, 28, 28).expand(11, -1, -1, -1)
    t = torch.full((11,), 250.0)
    out = net(x, t, torch.arange(11))
    # Every pair of labels (including "no label") gives a different prediction for the same x_t, t.
    diffs = (out[:, None] - out[None, :]).abs().flatten(2).amax(-1)
    off_diagonal = diffs[~torch.eye(11, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-6


def test_timestep_changes_the_output_smoothly():
    net = _net(num_classes=0)
    _randomise_zero_init(net)
    net.eval()
    x = torch.randn(1, 1, 28, 28).expand(3, -1, -1, -1)
    out = net(x, torch.tensor([100.0, 100.001, 800.0]))
    near = (out[0] - out[1]).abs().max()
    far = (out[0] - out[2]).abs().max()
    assert far > 1e-4
    assert near < far * 1e-2


def test_gradient_reaches_every_parameter():
    net = _net(num_classes=10, in_channels=3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 3, 28, 28)
    t = torch.tensor([3.0, 30.5, 300.0, 999.0])
    labels = torch.tensor([0, 5, 9, 10])
    # The first step moves the zero output conv off zero; the second backward then reaches everything.
    for _ in range(2):
        opt.zero_grad()
        (net(x, t, labels) - x).pow(2).mean().backward()
        opt.step()
    for name, p in net.named_parameters():
        if name == "label_emb.weight":
            used = torch.tensor([0, 5, 9, 10])
            assert torch.all(p.grad[used].abs().sum(1) > 0), name
            unused = torch.tensor([1, 2, 3, 4, 6, 7, 8])
            assert torch.all(p.grad[unused] == 0), name  # rows of labels not in the batch get no gradient
        else:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_eval_mode_is_deterministic_even_with_dropout():
    net = _net(num_classes=10, dropout=0.3)
    _randomise_zero_init(net)
    net.eval()
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 20.0]), torch.tensor([1, 2])
    torch.testing.assert_close(net(x, t, y), net(x, t, y), rtol=0, atol=0)
    net.train()
    assert not torch.equal(net(x, t, y), net(x, t, y))


def test_batch_items_are_independent():
    """GroupNorm and attention act per sample: an item's output must not depend on the rest of the batch."""
    net = _net(num_classes=10)
    _randomise_zero_init(net)
    net.eval()
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([4, 5, 6])
    torch.testing.assert_close(net(x, t, y)[:1], net(x[:1], t[:1], y[:1]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("blocks", [1, 2])
def test_options_build_and_keep_shape(attention, blocks):
    net = _net(mid_attention=attention, blocks_per_level=blocks, channels=(8, 16), groups=8)
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor([0.0, 5.0])).shape == x.shape


def test_timestep_embedding_values():
    emb = timestep_embedding(torch.tensor([0.0, 2.5]), 6)
    assert emb.shape == (2, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    freqs = 10_000.0 ** (-torch.arange(3) / 3)
    torch.testing.assert_close(emb[1, 3:], torch.sin(2.5 * freqs))
    assert timestep_embedding(torch.tensor([1.0]), 7).shape == (1, 7)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_res_block_uses_the_embedding(scale_shift):
    torch.manual_seed(0)
    block = ResBlock(8, 16, embed_dim=4, groups=4, scale_shift=scale_shift)
    x = torch.randn(2, 8, 7, 7)
    emb = torch.randn(1, 4).expand(2, -1)
    out = block(x, emb)
    assert out.shape == (2, 16, 7, 7)
    assert not torch.allclose(out, block(x, emb + 1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale_shift", [False, True])
@pytest.mark.parametrize("widths", [(8, 16), (16, 16)])  # a 1x1 skip, and an identity skip
def test_res_block_writes_in_place_only_without_autograd_and_gives_the_same_values(dtype, scale_shift, widths):
    torch.manual_seed(0)
    block = ResBlock(*widths, embed_dim=4, groups=4, scale_shift=scale_shift).to(dtype)
    x = torch.randn(3, widths[0], 7, 7).to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    emb = torch.randn(3, 4).to(dtype)
    kept = x.detach().clone()
    with_graph = block(x, emb)  # autograd: the out-of-place form
    with torch.no_grad():
        in_place = block(x, emb)
    assert torch.equal(in_place, with_graph.detach()) and torch.equal(x.detach(), kept)  # x is never written
    with_graph.float().square().sum().backward()  # autograd still has what it saved
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())


def test_channels_last_gives_the_same_output():
    net = _net(num_classes=10)
    _randomise_zero_init(net)
    net.eval()
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([10.0, 900.0]), torch.tensor([3, 10])
    expected = net(x, t, y)
    net = net.to(memory_format=torch.channels_last)
    got = net(x.contiguous(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_scalar_timestep_is_broadcast_and_wrong_shapes_are_refused():
    net = _net(num_classes=0)
    x = torch.randn(2, 1, 28, 28)
    assert net(x, torch.tensor(5.0)).shape == x.shape
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, torch.tensor([1.0, 2.0, 3.0]))


def test_the_repeat_resize_is_torchs_nearest_to_the_bit():
    """repeat_resize (what compiled training resizes with) picks the pixels F.interpolate(mode="nearest") picks
    wherever it applies: every n -> n, 2n, 2n - 1 up to 32 -> 64 (28 <-> 14 <-> 7 and 4 -> 7 among them), in
    either layout; other pairs it leaves to F.interpolate."""
    applied = 0
    for n_in in range(1, 33):
        for channels_last in (False, True):
            x = torch.randn(2, 3, n_in, n_in + 1)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for n_out in range(1, 65):
                size = (n_out, n_out + 2 if n_out in (2 * n_in - 1, 2 * n_in) else n_in + 1)
                y = repeat_resize(x, size)
                if n_out in (n_in, 2 * n_in, 2 * n_in - 1):
                    assert torch.equal(y, F.interpolate(x, size=size, mode="nearest")), (n_in, size)
                    applied += 1
                else:
                    assert y is None
    assert applied > 150
    y = repeat_resize(torch.randn(2, 3, 7, 7).contiguous(memory_format=torch.channels_last), (14, 14))
    assert y.is_contiguous(memory_format=torch.channels_last)  # sampling's layout on the CPU is kept
