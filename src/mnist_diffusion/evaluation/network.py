"""The evaluator: a small CNN for 28x28 grey images whose penultimate layer is the feature space of
every sample-quality metric (FID, KID, precision/recall), and whose logits classify samples.

Inception-v3 features (the usual FID network) are made for 299x299 colour photographs; on digits they
measure mostly upsampling artefacts. A classifier trained on the data itself gives features that
separate what matters here (digit identity, stroke style), as in the MNIST-FID practice of e.g.
Lucic et al. (2018) "Are GANs created equal?".

Architecture (default `EvaluatorConfig`, 138,810 parameters)::

    x (N,1,28,28) in [0,1]
    -> conv3x3 -> BN -> ReLU at 28x28 (16 ch)                -> maxpool -> 14x14
    -> [conv3x3 -> BN -> ReLU] x2 at 14x14 (32 ch)           -> maxpool -> 7x7
    -> [conv3x3 -> BN -> ReLU] x2 at 7x7 (96 ch) -> global average pool -> 96
    -> linear 96 -> 128 -> ReLU             = features (N, 128)
    -> linear 128 -> 10                     = logits (N, 10)

The 28x28 stage is a single narrow conv: on a CPU its activations, not its weights, set the cost, so
the capacity sits at 14x14 and 7x7 (one training epoch costs about a minute of one core).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
from torch import nn

from mnist_diffusion.errors import UserError
from mnist_diffusion.files import parse_json


@dataclass(frozen=True)
class EvaluatorConfig:
    """Shape of the evaluator network; stored as JSON in the weights file's metadata."""

    widths: tuple[int, int, int] = (16, 32, 96)  # channels at 28x28, 14x14, 7x7
    depths: tuple[int, int, int] = (1, 2, 2)  # conv-BN-ReLU blocks at 28x28, 14x14, 7x7
    feature_dim: int = 128  # penultimate (feature) layer width
    num_classes: int = 10

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "evaluator metadata") -> EvaluatorConfig:
        try:
            raw = parse_json(text, f"{source}: 'config'")  # bounded: no RecursionError from a deep nest
        except UserError as e:
            raise UserError(
                f"{str(e).removesuffix('.')}; re-create the file with `mnist-diffusion classifier train`."
            ) from None
        if not isinstance(raw, dict):
            raise UserError(
                f"{source}: 'config' is not a JSON object; re-create the file with `mnist-diffusion classifier train`."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"{source}: unknown evaluator config key {unknown[0]!r}; known keys are {sorted(known)}.")
        for key in ("widths", "depths"):
            if key in raw:
                raw[key] = tuple(int(w) for w in raw[key])
        return cls(**raw)


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: the BatchNorm shift that follows makes a conv bias redundant.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class FeatureNet(nn.Module):
    """Digit/garment classifier whose penultimate activations are the evaluation features.

    Inputs are float images (N, 1, 28, 28) with values in [0, 1] (uint8 / 255). Always used in
    eval mode for evaluation, so BatchNorm applies its stored statistics and features of one image
    do not depend on the rest of the batch.
    """

    def __init__(self, config: EvaluatorConfig = EvaluatorConfig()):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for stage, (width, depth) in enumerate(zip(config.widths, config.depths)):
            for _ in range(depth):
                layers.append(_conv_bn_relu(c_in, width))
                c_in = width
            if stage < 2:  # 28 -> 14 -> 7
                layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c_in, config.feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, feature_dim) penultimate activations (>= 0)."""
        return self.fc(self.body(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, num_classes) class logits."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
