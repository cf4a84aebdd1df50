"""Sample-quality metrics as pure float64 numpy functions of feature vectors or predictions.

Features are the evaluator's penultimate activations, (N, D) arrays; every function converts its
inputs to float64 first, so results do not depend on the dtype a caller happened to use.

- FID: Heusel et al. (2017) "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium" -- Frechet distance between Gaussians fitted to the two feature sets.
- KID: Binkowski et al. (2018) "Demystifying MMD GANs" -- unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets.
- Precision / recall: Kynkaanniemi et al. (2019) "Improved Precision and Recall Metric for Assessing
  Generative Models" -- k-nearest-neighbour balls around each set approximate its manifold.
- Memorisation: nearest-training-image distances in pixel space (see `memorisation`).
"""

from __future__ import annotations

import numpy as np
import torch

# The fewest samples each metric can be computed from at all (not the number it is reliable at).
MIN_SAMPLES = {"fid": 2, "kid": 2, "precision_recall": 4, "classes": 1, "label_accuracy": 1, "memorisation": 1}


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------------------- FID
def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix, (D, D) -> (D, D).

    Through the eigen-decomposition a = V diag(w) V^T: sqrt(a) = V diag(sqrt(w)) V^T. Eigenvalues a
    hair below zero (round-off on a rank-deficient covariance) are clipped to zero.
    """
    a = _f64(a)
    a = (a + a.T) / 2  # remove round-off asymmetry so eigh's symmetric assumption holds exactly
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), both float64. Needs N >= 2."""
    f = _f64(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature statistics need a (N, D) array with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):

        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    sigma1 sigma2 is not symmetric, but it is similar to the PSD matrix s sigma2 s with
    s = sigma1^(1/2), so tr((sigma1 sigma2)^(1/2)) = sum of sqrt(eigenvalues of s sigma2 s); this needs
    only symmetric eigen-decompositions (no scipy.linalg.sqrtm, no complex round-off).
    """
    mu1, mu2, sigma1, sigma2 = _f64(mu1), _f64(mu2), _f64(sigma1), _f64(sigma2)
    s = sqrtm_psd(sigma1)
    middle = s @ sigma2 @ s
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)  # a distance; tiny negatives are round-off on identical inputs


def fid_from_features(features: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """FID of (N, D) features against reference statistics (mean (D,), covariance (D, D))."""
    mu, sigma = feature_statistics(features)
    return frechet_distance(mu, sigma, mu_ref, sigma_ref)


# ----------------------------------------------------------------------------------------- KID
def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel of Binkowski et al. (2018): (x y^T / D + 1)^3, (m, D) x (n, D) -> (m, n)."""
    x, y = _f64(x), _f64(y)
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 between the distributions of rows of x (m, D) and y (n, D).

    Diagonal terms k(x_i, x_i) are left out of the within-set means, which makes the estimate
    unbiased: its expectation is exactly 0 when x and y come from one distribution (it can be < 0).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD^2 needs at least 2 rows in each set, got {m} and {n}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features: np.ndarray, ref_features: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """KID: mean and standard deviation of unbiased MMD^2 over `subsets` random subset pairs.

    Each pair draws min(subset_size, N, N_ref) rows from each set without replacement (as in
    Binkowski et al.'s reference code). Returns (mean, std, subset size used). Seeded: the same
    inputs give the same number.
    """
    f, r = _f64(features), _f64(ref_features)
    m = min(subset_size, len(f), len(r))
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        values[i] = mmd2_unbiased(f[rng.choice(len(f), m, replace=False)], r[rng.choice(len(r), m, replace=False)])
    return float(values.mean()), float(values.std()), m


# ------------------------------------------------------------------------- precision and recall
def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = 2048) -> np.ndarray:
    """Distance from each row of (N, D) features to its k-th nearest other row, (N,) float64."""
    f = _f64(features)
    if len(f) <= k:
        raise ValueError(f"k-nearest-neighbour radii with k={k} need more than {k} points, got {len(f)}")
    radii = np.empty(len(f))
    for start in range(0, len(f), chunk):
        d = _squared_distances(f[start : start + chunk], f)
        # position 0 of each sorted row is the point itself (distance 0), so the k-th neighbour is at k.
        radii[start : start + chunk] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return radii


def _inside_manifold(queries: np.ndarray, support: np.ndarray, radii: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """For each query row: is it within radii[j] of some support row j? (Nq,) bool."""
    inside = np.empty(len(queries), dtype=bool)
    r2 = radii**2
    for start in range(0, len(queries), chunk):
        d = _squared_distances(queries[start : start + chunk], support)
        inside[start : start + chunk] = (d <= r2[None, :]).any(axis=1)
    return inside


def precision_recall(features: np.ndarray, ref_features: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k = 3 as in the paper.

    Precision: fraction of generated samples inside the real manifold (the union of balls around each
    real point reaching its k-th nearest real neighbour) -- are samples realistic?
    Recall: fraction of real points inside the generated manifold -- is the data's variety covered?
    Compare sets of equal size: the ball radii shrink as a set grows.
    """
    fake, real = _f64(features), _f64(ref_features)
    precision = _inside_manifold(fake, real, knn_radii(real, k)).mean()
    recall = _inside_manifold(real, fake, knn_radii(fake, k)).mean()
    return float(precision), float(recall)


# ------------------------------------------------------------------------ classes and labels
def class_counts(predicted: np.ndarray, num_classes: int = 10) -> np.ndarray:
    """Histogram of predicted classes, (N,) int -> (num_classes,) int64."""
    return np.bincount(np.asarray(predicted, dtype=np.int64), minlength=num_classes).astype(np.int64)


def class_entropy(counts: np.ndarray) -> float:
    """Entropy in bits of the class histogram; log2(10) = 3.32 when all ten classes are equally common.

    Lower values mean mode dropping (some classes generated rarely or never).
    """
    p = _f64(counts) / max(int(np.sum(counts)), 1)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 (a single class) into 0.0


def label_accuracy(predicted: np.ndarray, requested: np.ndarray) -> float:
    """Fraction of conditional samples that the evaluator classifies as the label they were asked for."""
    predicted, requested = np.asarray(predicted), np.asarray(requested)
    return float((predicted == requested).mean())


# ------------------------------------------------------------------------------ memorisation
# A sample is a near-copy when its distance to the nearest training image is below this fraction of
# that training image's own distance to its nearest other training image (see `memorisation`).
COPY_RATIO = 1.0 / 3.0


def nearest_neighbours(
    queries: np.ndarray, base: np.ndarray, skip: np.ndarray | None = None, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean nearest neighbour in `base` (M, D) of each row of `queries` (N, D).

    Returns (distance float64 (N,), index int64 (N,)). `skip` (N,) optionally names, per query, one
    base row it may not match (the query's own row when queries are drawn from base). The search
    runs as float32 matrix products (10,000 x 60,000 x 784 is ~1 TFLOP); the winning pair's distance
    is then recomputed in float64, so reported distances are exact.
    """
    q32 = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    b32 = torch.from_numpy(np.ascontiguousarray(base, dtype=np.float32))
    b_sq = (b32 * b32).sum(1)
    index = np.empty(len(q32), dtype=np.int64)
    for start in range(0, len(q32), chunk):
        q = q32[start : start + chunk]
        d = b_sq[None, :] - 2.0 * (q @ b32.T)  # |q|^2 is the same along a row, so it cannot change argmin
        if skip is not None:
            d[torch.arange(len(q)), torch.from_numpy(np.asarray(skip[start : start + chunk], dtype=np.int64))] = float(
                "inf"
            )
        index[start : start + chunk] = d.argmin(dim=1).numpy()
    diff = _f64(queries) - _f64(np.asarray(base)[index])  # index first: never copy all of base to float64
    return np.sqrt((diff * diff).sum(1)), index


def memorisation(
    distances: np.ndarray, neighbour_index: np.ndarray, train_nn_distances: np.ndarray, copy_ratio: float = COPY_RATIO
) -> dict:
    """Near-copy statistics from nearest-training-image distances (pixel space, images in [0, 1]).

    For sample i with nearest training image j at distance d_i, let s_j be the distance from training
    image j to its own nearest other training image. The ratio r_i = d_i / s_j says how much closer
    the sample is to j than j's closest real neighbour is. A held-out real image has r near 1 or
    above; a copy of j, even with some pixel noise, has r near 0. A sample is a near-copy when
    r_i < copy_ratio (1/3: it must sit three times closer to a training image than any other
    training image does). Dividing by s_j makes one threshold work for plain digits that sit in dense
    regions (small s_j) as well as rare shapes (large s_j).

    Pixel space, not feature space: a near-copy is a statement about pixels, and the evaluator's
    features are deliberately blind to differences (stroke width, small shifts) that tell two
    different drawings of one digit apart.
    """
    d = _f64(distances)
    s = _f64(train_nn_distances)[np.asarray(neighbour_index)]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(s > 0, d / np.where(s > 0, s, 1.0), np.where(d > 0, np.inf, 0.0))
    return {
        "copy_fraction": float((ratio < copy_ratio).mean()),
        "copy_ratio_threshold": float(copy_ratio),
        "median_ratio": float(np.median(ratio)),
        "median_nn_distance": float(np.median(d)),
    }
