"""`mnist-diffusion evaluate` and `evaluator` end to end, the reference cache, `quick_kid`, and the
one-sentence errors for bad sample files (shipped evaluator, real MNIST, a few hundred images)."""

import json

import numpy as np
import pytest
import torch

from mnist_diffusion import assets
from mnist_diffusion.cli import main
from mnist_diffusion.data import load_split
from mnist_diffusion.evaluation import evaluator_file, quick_kid, reference
from mnist_diffusion.evaluation.network import EvaluatorConfig, FeatureNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def test_images():
    images, labels = load_split("mnist", "test")
    return images, labels


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_evaluate_npz_end_to_end(tmp_path, test_images, capsys):
    images, labels = test_images
    path = _npz(tmp_path / "s.npz", images=images[:300], labels=labels[:300])
    out_json = tmp_path / "r.json"
    rc = main(["evaluate", path, "--kid-subsets", "10", "--kid-subset-size", "100", "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "FID@300" in text and "KID@300" in text and "train images" in text and "uniform noise" in text
    report = json.loads(out_json.read_text())
    s, train, noise = report["samples"], report["baselines"]["train"], report["baselines"]["noise"]
    assert s["n"] == train["n"] == noise["n"] == 300
    assert report["evaluator"]["sha256"] == assets.PACKAGED["evaluator-mnist"].sha256
    # real test digits: realistic, labelled correctly, not copies; noise: far away and unrecognisable
    assert s["label_accuracy"] > 0.97 and train["label_accuracy"] > 0.97
    assert noise["fid"] > 50 * max(s["fid"], train["fid"])
    assert s["precision"] > 0.6 and noise["precision"] < 0.05
    assert s["memorisation"]["copy_fraction"] < 0.02
    assert train["memorisation"]["copy_fraction"] == 1.0  # training images are their own nearest neighbour
    assert noise["memorisation"]["copy_fraction"] == 0.0


def test_evaluate_unlabelled_without_baselines(tmp_path, test_images, capsys):
    path = _npz(tmp_path / "s.npz", images=test_images[0][:50])
    rc = main(["evaluate", path, "--no-baselines", "--metrics", "fid,kid,classes", "--kid-subsets", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "FID@50" in text and "label accuracy" not in text and "uniform noise" not in text


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ({"images": np.zeros((10, 28, 28), np.float32)}, "'images' must be a uint8 array of shape (N, 28, 28)"),
        ({"images": np.zeros((10, 32, 32), np.uint8)}, "got dtype uint8 and shape (10, 32, 32)"),
        ({"pictures": np.zeros((10, 28, 28), np.uint8)}, "has no 'images' array (found: pictures)"),
        (
            {"images": np.zeros((10, 28, 28), np.uint8), "labels": np.zeros(9, np.int64)},
            "'labels' must be an integer array of shape (10,)",
        ),
        ({"images": np.zeros((10, 28, 28), np.uint8), "labels": np.full(10, 12)}, "'labels' must lie in 0-9"),
        ({"images": np.zeros((3, 28, 28), np.uint8)}, "holds 3 images but precision_recall needs at least 4"),
    ],
)
def test_bad_sample_files_get_one_clear_sentence(tmp_path, capsys, arrays, expected):
    path = _npz(tmp_path / "bad.npz", **arrays)
    assert main(["evaluate", path]) == 2
    err = capsys.readouterr().err
    assert expected in err and "bad.npz" in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--metrics", "label_accuracy"], "has no 'labels' array, so label accuracy cannot be computed"),
        (["--n", "20"], "holds 10 images but 20 were asked for"),
        (["--metrics", "fid,iss"], "unknown metric 'iss'"),
        (["--steps", "10"], "--steps applies only when PATH is a model"),
        (["--compile"], "--compile applies only when PATH is a model"),
    ],
)
def test_bad_requests_get_one_clear_sentence(tmp_path, capsys, argv, expected):
    path = _npz(tmp_path / "s.npz", images=np.zeros((10, 28, 28), np.uint8))
    assert main(["evaluate", path, *argv]) == 2
    assert expected in capsys.readouterr().err


def test_unreadable_npz(tmp_path, capsys):
    path = tmp_path / "s.npz"
    path.write_bytes(b"garbage")
    assert main(["evaluate", str(path)]) == 2
    assert "cannot read samples file" in capsys.readouterr().err


def test_quick_kid(test_images):
    images, labels = test_images
    out = quick_kid(images[-200:], labels[-200:], "mnist")
    assert out["n"] == 200 and out["label_accuracy"] > 0.97
    noise = np.random.default_rng(0).integers(0, 256, (200, 28, 28), dtype=np.uint8)
    assert quick_kid(noise, None, "mnist")["kid_mean"] > 100 * abs(out["kid_mean"]) + 1e-3


def test_reference_cache_is_keyed_on_evaluator_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path))
    images = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    evs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"ev{seed}.safetensors"
        sha = evaluator_file.save_evaluator(
            FeatureNet(EvaluatorConfig(widths=(4, 8, 8), depths=(1, 1, 1), feature_dim=16)), path, {"dataset": "toy"}
        )
        evs.append(evaluator_file.load_evaluator_file(path, sha))
    first = reference.reference_stats(evs[0], "toy", images)
    files = list((tmp_path / "evaluation").glob("reference-toy-test-*.npz"))
    assert len(files) == 1 and evs[0].sha256[:16] in files[0].name
    again = reference.reference_stats(evs[0], "toy", images)
    np.testing.assert_array_equal(first.features, again.features)
    other = reference.reference_stats(evs[1], "toy", images)
    assert other.evaluator_sha256 == evs[1].sha256 and not np.allclose(other.mu, first.mu)
    # a file whose recorded hash does not match is recomputed, never used
    np.savez(
        files[0],
        features=np.zeros((40, 16), np.float32),
        predicted=np.zeros(40, np.int64),
        evaluator_sha256=np.array("f" * 64),
        data_sha256=np.array(first.data_sha256),
        cache_version=np.array(reference.CACHE_VERSION),
    )
    np.testing.assert_array_equal(reference.reference_stats(evs[0], "toy", images).features, first.features)


def test_evaluator_info(capsys):
    assert main(["evaluator", "info"]) == 0
    assert "(verified)" in capsys.readouterr().out


def test_evaluator_of_another_dataset_is_refused(tmp_path, capsys):
    weights = tmp_path / "toy.safetensors"
    evaluator_file.save_evaluator(
        FeatureNet(EvaluatorConfig(widths=(4, 8, 8), depths=(1, 1, 1), feature_dim=16)),
        weights,
        {"dataset": "fashion-mnist"},
    )
    path = _npz(tmp_path / "s.npz", images=np.zeros((10, 28, 28), np.uint8))
    assert main(["evaluate", path, "--evaluator", str(weights)]) == 2
    assert "was trained on 'fashion-mnist', not 'mnist'" in capsys.readouterr().err


def test_data_labels_are_those_of_the_train_baseline(test_images, monkeypatch):
    """`baseline_labels` gives samples the class mix of the training images the baseline scores."""
    from mnist_diffusion.evaluation import report

    seen = []
    monkeypatch.setattr(report, "score_set", lambda images, labels, **_: seen.append((images, labels)) or {})
    images, labels = test_images
    report.evaluate_images(images[:120], labels[:120], metrics=("fid",), seed=3)
    train_images, train_labels = load_split("mnist", "train")
    (_, _), (baseline_images, baseline_labels), _ = seen  # samples, train baseline, noise baseline
    wanted = report.baseline_labels(120, seed=3)
    assert wanted.dtype == np.int64 and np.array_equal(wanted, baseline_labels)
    assert not np.array_equal(wanted, report.baseline_labels(120, seed=4))
    assert len(np.unique(wanted)) == 10  # a random draw of the training set, not one class
    matches = [np.flatnonzero((train_images == img).all(axis=(1, 2))) for img in baseline_images[:5]]
    assert all(np.isin(train_labels[m], wanted[i]).all() for i, m in enumerate(matches))


def test_evaluate_with_data_labels_refuses_more_than_the_training_set():
    from mnist_diffusion.errors import UserError
    from mnist_diffusion.evaluation import report

    with pytest.raises(UserError, match="--labels data needs n <= 60000"):
        report.baseline_labels(60001)
