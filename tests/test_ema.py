"""The weight average: ema <- d * ema + (1 - d) * w with d = min(decay, (1 + n) / (10 + n))."""

import torch
from torch import nn

from mnist_diffusion.training.ema import EMA


def test_ema_follows_its_formula_with_warm_up_and_copies_integer_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(net, decay=0.9)
    expected = {k: v.detach().clone().double() for k, v in net.state_dict().items()}
    for n in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()(torch.randn(8, 3))  # moves the BatchNorm running stats and its integer counter
        ema.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v.double()
            else:
                expected[k] = v.double()
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-6, atol=1e-6, msg=k)
    assert ema.state_dict()["1.num_batches_tracked"].item() == 5
