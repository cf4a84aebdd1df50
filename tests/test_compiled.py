"""The run-time wrappers of a sampling network: bf16 between fp32 boundaries (`Bf16Network`), torch.compile with
one graph per batch size and short batches padded (`CompiledNetwork`), and `wrap`, which composes them."""

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from mnist_diffusion import runtime
from mnist_diffusion.precision import PrecisionChoice
from mnist_diffusion.runtime import Bf16Network, CompiledNetwork, wrap

FP32, BF16 = PrecisionChoice("fp32", "test"), PrecisionChoice("bf16", "test")


class _Recorder(nn.Module):
    """A one-conv network that records the dtypes it was called with."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.seen = None

    def forward(self, x, t, labels):
        self.seen = (x.dtype, t.dtype, labels.dtype)
        return self.conv(x)


def test_bf16_network_runs_the_weights_in_bf16_between_fp32_boundaries():
    net = _Recorder()
    fp32_out = net(torch.ones(2, 1, 4, 4) * 0.3, torch.full((2,), 999.0), torch.arange(2))
    wrapped = Bf16Network(net)
    assert wrapped.net is net and net.conv.weight.dtype == torch.bfloat16  # cast in place, exposed as .net
    out = wrapped(torch.ones(2, 1, 4, 4) * 0.3, torch.full((2,), 999.0), torch.arange(2))
    assert net.seen == (torch.bfloat16, torch.float32, torch.int64)  # only x is cast: t = 999 stays exact
    assert out.dtype == torch.float32 and out.shape == fp32_out.shape
    assert 0 < (out - fp32_out).abs().max() < 0.01  # bf16's rounding
    assert wrapped.num_classes == 10  # attributes read through to the wrapped network
    with pytest.raises(AttributeError):
        wrapped.no_such_attribute  # noqa: B018


def test_wrap_composes_the_wrappers_in_one_line(monkeypatch):
    monkeypatch.setattr(runtime.torch, "compile", lambda net, dynamic: net)
    net = _Recorder()
    assert wrap(net, FP32) is net and net.conv.weight.dtype == torch.float32  # fp32: the network as it is
    compiled = wrap(net, BF16, compile=True)
    assert isinstance(compiled, CompiledNetwork) and isinstance(compiled.net, Bf16Network)
    assert compiled.net.net is net and compiled.num_classes == 10
    assert compiled(torch.zeros(3, 1, 4, 4), torch.zeros(3), torch.arange(3)).dtype == torch.float32
    assert list(net.state_dict()) == ["conv.weight", "conv.bias"]  # the model's own keys, nothing added


def test_a_short_batch_is_padded_to_a_compiled_size_and_cut_back(monkeypatch, tiny_guided_pipeline):
    calls = []

    def fake_compile(net, dynamic):
        assert dynamic is False  # graphs specialised to their shapes

        def run(x, t, labels):
            calls.append((x.shape[0], t.shape[0], labels.shape[0]))
            return net(x, t, labels)

        return run

    monkeypatch.setattr(runtime.torch, "compile", fake_compile)
    net = tiny_guided_pipeline().net
    wrapped = CompiledNetwork(net)
    assert wrapped.num_classes == net.num_classes  # attributes come from the plain network
    x, t, labels = torch.randn(6, 1, 28, 28), torch.linspace(10, 900, 6), torch.arange(6)
    with torch.inference_mode():
        full = wrapped(x, t, labels)
        short = wrapped(x[:4], t[:4], labels[:4])
        larger = wrapped(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, labels]))
        direct = net(x[:4], t[:4], labels[:4])
    assert calls == [(6, 6, 6), (6, 6, 6), (12, 12, 12)]  # the short batch ran as the compiled 6
    assert short.shape == (4, 1, 28, 28) and full.shape == (6, 1, 28, 28) and larger.shape == (12, 1, 28, 28)
    torch.testing.assert_close(short, direct)  # padding changes no image
    torch.testing.assert_close(short, full[:4])


needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="torch.compile on the CPU needs a C++ compiler"
)


@needs_compiler
def test_a_compiled_pipeline_draws_the_eager_digits(tiny_guided_pipeline):
    eager, fast = tiny_guided_pipeline(), tiny_guided_pipeline(compile=True)
    a = eager.sample(5, steps=3, seed=1, batch_size=2)
    b = fast.sample(5, steps=3, seed=1, batch_size=2)  # batches of 2, 2 and 1: the last one padded
    assert b.settings["compiled"] and not a.settings["compiled"]
    assert fast.network._sizes == [4]  # guided: conditional and unconditional halves in one batch of 4
    assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 2
    assert (a.samples - b.samples).abs().max() < 1e-3


@needs_compiler
def test_a_compiled_bf16_training_step_gets_the_eager_gradients(tiny_guided_pipeline):
    """train.compile under bf16 autocast: every parameter's gradient as in eager bf16. (With F.interpolate in the
    up-steps, torch 2.13's inductor zeroed the gradient of everything below the top level.)"""
    net = tiny_guided_pipeline().net.train()
    g = torch.Generator().manual_seed(0)
    x, target = torch.randn(4, 1, 28, 28, generator=g), torch.randn(4, 1, 28, 28, generator=g)
    t, labels = torch.randint(0, 1000, (4,), generator=g), torch.randint(0, 11, (4,), generator=g)

    def gradients(forward):
        net.zero_grad(set_to_none=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(x, t, labels)
        ((out.float() - target) ** 2).mean().backward()
        return {name: p.grad.clone() for name, p in net.named_parameters()}

    eager, compiled_ = gradients(net), gradients(torch.compile(net))
    for name, grad in eager.items():
        assert grad.norm() > 0, name
        assert (compiled_[name] - grad).norm() <= 0.05 * grad.norm(), name
