"""Evaluation reports: every metric for a set of samples, beside the same metrics for two baselines
computed at the same sample count N.

A FID of 3 means nothing alone: FID is biased upwards at small N, and its scale depends on the
feature network. So each report also scores N real *training* images against the same reference
(the best a generator that reproduces the data distribution can expect: the train-vs-test
baseline) and N images of uniform noise (the worst), and N is printed in every figure's name
("FID@10000").
"""

from __future__ import annotations

import json
import math
import pathlib
import zipfile
from collections.abc import Iterable

import numpy as np

from mnist_diffusion.batches import MAX_SEED, check_whole
from mnist_diffusion.data import load_split
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation import metrics as M
from mnist_diffusion.evaluation.evaluator_file import Evaluator, load_evaluator
from mnist_diffusion.evaluation.features import extract
from mnist_diffusion.evaluation.reference import ReferenceStats, pixels, reference_stats, train_self_distances
from mnist_diffusion.files import atomic_write_text

ALL_METRICS = ("fid", "kid", "precision_recall", "classes", "label_accuracy", "memorisation")
PR_K = 3
MAX_KID_SUBSETS = 10_000  # KID's subset pairs: its standard deviation settles long before
MAX_KID_SUBSET_SIZE = 100_000  # rows per KID subset (at most the sample count and the reference's are used)


def check_samples(images, labels, source: str = "images") -> tuple[np.ndarray, np.ndarray | None]:
    """Validate samples: uint8 (N, 28, 28) images and, if given, integer labels (N,) in [0, 9]."""
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 3
        or images.shape[1:] != (28, 28)
    ):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise UserError(
            f"{source}: 'images' must be a uint8 array of shape (N, 28, 28) with pixels 0-255, "
            f"got dtype {dtype} and shape {shape}."
        )
    if len(images) == 0:
        raise UserError(f"{source}: 'images' holds no images.")
    if labels is None:
        return images, None
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{source}: 'labels' must be an integer array of shape ({len(images)},) matching "
            f"'images', got dtype {labels.dtype} and shape {labels.shape}."
        )
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f"{source}: 'labels' must lie in 0-9, found values from {labels.min()} to {labels.max()}.")
    return images, labels.astype(np.int64)


def read_samples(path: pathlib.Path, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """images uint8 (N, 28, 28) and labels int64 (N,) | None from a samples .npz (no pickles); the first n."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise UserError(
                    f"{path} has no 'images' array (found: {', '.join(z.files) or 'nothing'}); "
                    "save samples as np.savez(path, images=uint8 (N, 28, 28), labels=int (N,))."
                )
            images = z["images"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(
            f"cannot read samples file {path} ({e}); it must be a .npz written by numpy without object arrays."
        ) from None
    images, labels = check_samples(images, labels, source=str(path))
    if n is not None:
        if n > len(images):
            raise UserError(
                f"{path} holds {len(images)} images but {n} were asked for; ask for {len(images)} or fewer."
            )
        images, labels = images[:n], None if labels is None else labels[:n]
    return images, labels


def _check_counts(n: int, wanted: Iterable[str], source: str, explicit: bool) -> None:
    for name in wanted:
        need = M.MIN_SAMPLES[name]
        if n < need:
            hint = "" if explicit else f", or leave {name} out with --metrics"
            raise UserError(f"{source} holds {n} images but {name} needs at least {need}; provide more samples{hint}.")


def score_set(
    images: np.ndarray,
    labels: np.ndarray | None,
    evaluator: Evaluator,
    ref: ReferenceStats,
    train_images: np.ndarray | None,
    wanted: tuple[str, ...],
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    train_pixels: np.ndarray | None = None,
) -> dict:
    """All `wanted` metrics of one image set (uint8 (N,28,28)) against the reference statistics.

    train_images (uint8) are needed for memorisation only; train_pixels = pixels(train_images) may be
    passed to save recomputing it for each set.
    """
    n = len(images)
    features, predicted = extract(evaluator, images)
    out: dict = {"n": n}
    if "fid" in wanted:
        out["fid"] = M.fid_from_features(features, ref.mu, ref.sigma)
    if "kid" in wanted:
        mean, std, m = M.kernel_inception_distance(features, ref.features, kid_subsets, kid_subset_size, seed)
        out.update(kid_mean=mean, kid_std=std, kid_subset_size=m, kid_subsets=kid_subsets)
    if "precision_recall" in wanted:
        # Equal set sizes: k-NN ball radii shrink as a set grows, so unequal sizes bias the comparison.
        m = min(n, ref.n)
        rng = np.random.default_rng(seed)
        fake = features[rng.choice(n, m, replace=False)] if n > m else features
        real = ref.features[rng.choice(ref.n, m, replace=False)] if ref.n > m else ref.features
        out["precision"], out["recall"] = M.precision_recall(fake, real, k=PR_K)
        out["pr_n"] = m
    if "classes" in wanted:
        counts = M.class_counts(predicted, evaluator.net.config.num_classes)
        out["class_counts"] = counts.tolist()
        out["class_entropy_bits"] = M.class_entropy(counts)
    if "label_accuracy" in wanted and labels is not None:
        out["label_accuracy"] = M.label_accuracy(predicted, labels)
    if "memorisation" in wanted and train_images is not None:
        flat_train = pixels(train_images) if train_pixels is None else train_pixels
        dist, idx = M.nearest_neighbours(pixels(images), flat_train)
        self_dist = train_self_distances(train_images, idx, ref.dataset, flat_train)
        out["memorisation"] = M.memorisation(dist, idx, self_dist)
    return out


def _baseline_pick(n_train: int, n: int, seed: int) -> tuple[np.random.Generator, np.ndarray]:
    """The generator behind the baselines and the indices (min(n, n_train),) of the train-vs-test baseline."""
    rng = np.random.default_rng(seed + 1)  # not `seed`: keep baseline draws apart from the KID subsets
    return rng, rng.choice(n_train, min(n, n_train), replace=False)


def baseline_labels(n: int, dataset: str = "mnist", seed: int = 0, data_dir: str | None = None) -> np.ndarray:
    """The labels (n,) int64 of the n training images that `evaluate_images` (same seed) scores as its baseline.

    Sampling with these labels gives samples the baseline's class mix: FID against the test set then judges the
    digits, not a class mix that differs from the data's (real training images drawn evenly per digit score a
    clearly worse FID than a random draw: docs/results.md, quality suite).
    """
    _, train_labels = load_split(dataset, "train", data_dir)
    if n > len(train_labels):
        raise UserError(f"--labels data needs n <= {len(train_labels)} (the training set's size), got {n}.")
    return train_labels[_baseline_pick(len(train_labels), n, seed)[1]].astype(np.int64)


def check_scoring(metrics: Iterable[str] | None, kid_subsets: int, kid_subset_size: int, seed: int) -> None:
    """The scoring settings of `evaluate_images`, checked (names, whole numbers in range) before any sample is
    drawn or image scored; one sentence each."""
    unknown = [m for m in metrics or () if m not in ALL_METRICS]
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}.")
    check_whole("kid_subsets", kid_subsets, 1, MAX_KID_SUBSETS)
    check_whole("kid_subset_size", kid_subset_size, 2, MAX_KID_SUBSET_SIZE)  # an unbiased MMD needs 2 rows
    check_whole("seed", seed, 0, MAX_SEED)


def evaluate_images(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    dataset: str = "mnist",
    ref_split: str = "test",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    with_baselines: bool = True,
    metrics: Iterable[str] | None = None,
    evaluator_path: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    source: str = "images",
) -> dict:
    """Score uint8 samples (N, 28, 28) (with requested labels (N,) if conditional) against real data.

    metrics: subset of ALL_METRICS (default: all that apply; label accuracy only with labels).
    Baselines ('train': N real training images with their labels; 'noise': N uniform-noise images
    with the samples' labels) are scored with the same settings and seeds. `source` names the
    samples in error messages (a file name and key). Returns a JSON-ready dict.
    """
    check_scoring(metrics, kid_subsets, kid_subset_size, seed)
    explicit = metrics is not None
    wanted = tuple(ALL_METRICS if metrics is None else metrics)
    images, labels = check_samples(images, labels, source)
    if labels is None:
        if explicit and "label_accuracy" in wanted:
            raise UserError(
                f"{source} has no 'labels' array, so label accuracy cannot be computed; save the "
                "requested class of each sample as 'labels' (int64, shape (N,)) or drop label_accuracy."
            )
        wanted = tuple(m for m in wanted if m != "label_accuracy")
    _check_counts(len(images), wanted, source, explicit)

    evaluator = load_evaluator(dataset, evaluator_path)
    if evaluator.dataset != dataset:
        raise UserError(
            f"evaluator {evaluator.path} was trained on {evaluator.dataset!r}, not {dataset!r}; "
            f"pass --dataset {evaluator.dataset} or an evaluator trained on {dataset}."
        )
    ref_images, _ = load_split(dataset, ref_split, data_dir)
    ref = reference_stats(evaluator, dataset, ref_images, ref_split)
    need_train = with_baselines or "memorisation" in wanted
    train_images, train_labels = load_split(dataset, "train", data_dir) if need_train else (None, None)
    train_pixels = pixels(train_images) if "memorisation" in wanted else None
    common = {
        "evaluator": evaluator,
        "ref": ref,
        "train_images": train_images,
        "wanted": wanted,
        "train_pixels": train_pixels,
        "kid_subsets": kid_subsets,
        "kid_subset_size": kid_subset_size,
        "seed": seed,
    }

    n = len(images)
    report = {
        "dataset": dataset,
        "reference": {"split": ref_split, "n": ref.n, "data_sha256": ref.data_sha256},
        "evaluator": {
            "sha256": evaluator.sha256,
            "path": str(evaluator.path),
            "test_accuracy": evaluator.metadata.get("test_accuracy"),
        },
        "source": source,
        "n": n,
        "seed": seed,
        "settings": {
            "kid_subsets": kid_subsets,
            "kid_subset_size": kid_subset_size,
            "pr_k": PR_K,
            "copy_ratio": M.COPY_RATIO,
            "memorisation_space": "pixels",
            "metrics": list(wanted),
        },
        "samples": score_set(images, labels, **common),
        "baselines": {},
    }
    if with_baselines:
        rng, pick = _baseline_pick(len(train_images), n, seed)
        report["baselines"]["train"] = score_set(
            train_images[pick], train_labels[pick] if labels is not None else None, **common
        )
        noise = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        report["baselines"]["noise"] = score_set(noise, labels, **common)
    return report


# ------------------------------------------------------------------------------------ printing
def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if kind == "fid":
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    if kind == "kid":  # real-vs-real KID is ~1e-4 and noise ~1e2: only scientific notation shows both
        mean, std = value
        return f"{mean:.2e} ± {std:.1e}"
    if kind == "frac":
        return f"{value:.4f}"
    if kind == "bits":
        return f"{value:.3f}"
    return str(value)


def _rows(sets: dict[str, dict]) -> list[tuple[str, list[str]]]:
    def col(getter, kind):
        return [_fmt(getter(s), kind) for s in sets.values()]

    first = next(iter(sets.values()))
    n = first["n"]
    rows = []
    if "fid" in first:
        rows.append((f"FID@{n}", col(lambda s: s.get("fid"), "fid")))
    if "kid_mean" in first:
        rows.append(
            (
                f"KID@{n} (mean ± std, subsets of {first['kid_subset_size']})",
                col(lambda s: (s["kid_mean"], s["kid_std"]), "kid"),
            )
        )
    if "precision" in first:
        rows.append((f"precision@{first['pr_n']} (k={PR_K})", col(lambda s: s.get("precision"), "frac")))
        rows.append((f"recall@{first['pr_n']} (k={PR_K})", col(lambda s: s.get("recall"), "frac")))
    if "class_entropy_bits" in first:
        rows.append(
            (f"class entropy@{n} bits (max {math.log2(10):.3f})", col(lambda s: s.get("class_entropy_bits"), "bits"))
        )
    if "label_accuracy" in first:
        rows.append((f"label accuracy@{n}", col(lambda s: s.get("label_accuracy"), "frac")))
    if "memorisation" in first:
        rows.append(
            (
                f"near-copies@{n} (ratio < {M.COPY_RATIO:.2f})",
                col(lambda s: s.get("memorisation", {}).get("copy_fraction"), "frac"),
            )
        )
        rows.append((f"median NN ratio@{n}", col(lambda s: s.get("memorisation", {}).get("median_ratio"), "bits")))
    return rows


def format_report(report: dict) -> str:
    """The report as a fixed-width text table: samples beside the baselines, N in every figure."""
    names = {"samples": "samples", "train": "train images", "noise": "uniform noise"}
    sets = {"samples": report["samples"], **report["baselines"]}
    rows = _rows(sets)
    header = ["metric"] + [names.get(k, k) for k in sets]
    width0 = max([len(header[0])] + [len(r[0]) for r in rows])
    widths = [max([len(header[i + 1])] + [len(r[1][i]) for r in rows]) for i in range(len(sets))]
    line = lambda cells: "  ".join([cells[0].ljust(width0)] + [c.rjust(w) for c, w in zip(cells[1:], widths)])
    ref = report["reference"]
    out = [
        f"{report['source']}: {report['n']} samples vs {report['dataset']} {ref['split']} "
        f"({ref['n']} images); evaluator sha256 {report['evaluator']['sha256'][:16]}",
        line(header),
        line(["-" * width0] + ["-" * w for w in widths]),
    ]
    out += [line([name, *cells]) for name, cells in rows]
    for key, s in sets.items():
        if "class_counts" in s:
            out.append(f"class counts ({names.get(key, key)}): {' '.join(str(c) for c in s['class_counts'])}")
    return "\n".join(out)


def write_json(report: dict, path: str | pathlib.Path) -> pathlib.Path:
    return atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
