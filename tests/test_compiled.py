"""Sampling through torch.compile: one graph per batch size, short batches padded, the same digits."""

import shutil

import numpy as np
import pytest
import torch

from mnist_diffusion import compiled
from mnist_diffusion.compiled import CompiledNetwork
from mnist_diffusion.config import load_run_config
from mnist_diffusion.models import build_model
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.recipes import get_recipe


def _tiny(compile: bool, precision: str = "fp32") -> Pipeline:
    cfg = get_recipe("ddpm-cond")
    cfg = load_run_config({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "channels": [8, 16],
                                                      "embed_dim": 16, "groups": 4, "mid_attention": False}})
    torch.manual_seed(0)
    net = build_model(cfg.model)
    with torch.no_grad():
        net.out_conv.weight.normal_(0, 0.05)  # a fresh net predicts 0 everywhere; give it something to say
    return Pipeline(cfg, net.eval(), "cpu", precision=precision, compile=compile)


def test_a_short_batch_is_padded_to_a_compiled_size_and_cut_back(monkeypatch):
    calls = []

    def fake_compile(net, dynamic):
        assert dynamic is False  # graphs specialised to their shapes

        def run(x, t, labels):
            calls.append((x.shape[0], t.shape[0], labels.shape[0]))
            return net(x, t, labels)
        return run

    monkeypatch.setattr(compiled.torch, "compile", fake_compile)
    net = _tiny(False).net
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


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_a_compiled_pipeline_draws_the_eager_digits():
    eager, fast = _tiny(False), _tiny(True)
    a = eager.sample(5, steps=3, seed=1, batch_size=2)
    b = fast.sample(5, steps=3, seed=1, batch_size=2)  # batches of 2, 2 and 1: the last one padded
    assert b.settings["compiled"] and not a.settings["compiled"]
    assert fast._forward._sizes == [4]  # guided: conditional and unconditional halves in one batch of 4
    assert np.abs(a.images.astype(int) - b.images.astype(int)).max() <= 2
    assert (a.samples - b.samples).abs().max() < 1e-3
