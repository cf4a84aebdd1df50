"""A cheap check to run inside training every K steps: KID (and label accuracy) of ~500 samples.

The evaluator and the reference features are loaded once per process and kept, so each call costs
only the samples' forward pass through the small evaluator and a few small kernel matrices.
"""

from __future__ import annotations

import functools

import numpy as np

from mnist_diffusion.data import load_split
from mnist_diffusion.evaluation import metrics as M
from mnist_diffusion.evaluation.evaluator_file import Evaluator, load_evaluator
from mnist_diffusion.evaluation.features import extract
from mnist_diffusion.evaluation.reference import ReferenceStats, reference_stats
from mnist_diffusion.evaluation.report import check_samples


@functools.lru_cache(maxsize=4)
def _setup(dataset: str, data_dir: str | None) -> tuple[Evaluator, ReferenceStats]:
    evaluator = load_evaluator(dataset)
    images, _ = load_split(dataset, "test", data_dir)
    return evaluator, reference_stats(evaluator, dataset, images, "test")


def quick_kid(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    dataset: str = "mnist",
    subsets: int = 20,
    subset_size: int = 500,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict:
    """KID of uint8 samples (N, 28, 28) against the test set, plus label accuracy if labels (N,) are given.

    Returns {'n', 'kid_mean', 'kid_std', 'kid_subset_size', 'class_entropy_bits', 'label_accuracy'?,
    'evaluator_sha256'}. KID is unbiased, so values from runs with different N stay comparable in
    expectation (only their noise differs); use the full `evaluate` for figures to report.
    """
    images, labels = check_samples(images, labels, source="quick_kid images")
    if len(images) < M.MIN_SAMPLES["kid"]:
        raise ValueError(f"quick_kid needs at least {M.MIN_SAMPLES['kid']} images, got {len(images)}")
    evaluator, ref = _setup(dataset, data_dir)
    features, predicted = extract(evaluator, images)
    mean, std, m = M.kernel_inception_distance(features, ref.features, subsets, subset_size, seed)
    out = {
        "n": len(images),
        "kid_mean": mean,
        "kid_std": std,
        "kid_subset_size": m,
        "class_entropy_bits": M.class_entropy(M.class_counts(predicted, evaluator.net.config.num_classes)),
        "evaluator_sha256": evaluator.sha256,
    }
    if labels is not None:
        out["label_accuracy"] = M.label_accuracy(predicted, labels)
    return out
