"""Evaluator features and predicted classes of uint8 images, batch by batch."""

from __future__ import annotations

import numpy as np
import torch

from mnist_diffusion.evaluation.evaluator_file import Evaluator


@torch.no_grad()
def extract(evaluator: Evaluator, images: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) -> (features float64 (N, D), predicted class int64 (N,)).

    Pixels go in as uint8 / 255 in [0, 1], the range the evaluator was trained on; eval mode, so a
    sample's features never depend on the rest of its batch.
    """
    images = np.asarray(images)
    feats, preds = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(torch.float32)
        f = evaluator.net.features((x / 255.0).unsqueeze(1))
        feats.append(f.double().numpy())
        preds.append(evaluator.net.head(f).argmax(1).numpy().astype(np.int64))
    if not feats:
        return np.zeros((0, evaluator.net.config.feature_dim)), np.zeros((0,), dtype=np.int64)
    return np.concatenate(feats), np.concatenate(preds)
