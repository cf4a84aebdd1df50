"""The evaluator network, its reproducible weights files and the sha256 pin (synthetic data only)."""

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mnist_diffusion import assets
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation import evaluator_file
from mnist_diffusion.evaluation.classifier_training import EvaluatorTrainConfig, random_shift, train_evaluator
from mnist_diffusion.evaluation.network import EvaluatorConfig, FeatureNet, count_parameters
from mnist_diffusion.files import sha256_file

TINY = EvaluatorConfig(widths=(4, 8, 8), depths=(1, 1, 1), feature_dim=16)


def _toy_data(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.int64)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):  # class c = a bright bar in row band c: learnable in a few steps
        images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 255
    return images, labels


def test_default_network_shapes_and_size():
    net = FeatureNet().eval()
    x = torch.rand(3, 1, 28, 28)
    assert net.features(x).shape == (3, 128)
    assert net.logits(x).shape == (3, 10)
    assert 100_000 <= count_parameters(net) <= 300_000


def test_config_json_round_trip_and_unknown_key():
    assert EvaluatorConfig.from_json(TINY.to_json()) == TINY
    with pytest.raises(UserError, match="'widht'"):
        EvaluatorConfig.from_json('{"widht": [1, 2, 3]}')


def test_random_shift_moves_whole_images_within_bounds():
    x = torch.zeros(50, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    y = random_shift(x, 2, torch.Generator().manual_seed(0))
    pos = (y[:, 0] == 1).nonzero()[:, 1:]
    assert len(pos) == 50 and (pos - 14).abs().max() <= 2 and (pos != 14).any()


def _train_tiny(seed=0):
    cfg = EvaluatorTrainConfig(epochs=1, batch_size=32, seed=seed)
    return train_evaluator(cfg, _toy_data(64, 0), _toy_data(32, 1), arch=TINY, log=lambda s: None)


def test_training_is_reproducible_to_the_byte(tmp_path):
    torch.set_num_threads(1)
    hashes = [
        evaluator_file.save_evaluator(_train_tiny().net, tmp_path / f"{i}.safetensors", {"dataset": "toy"})
        for i in range(2)
    ]
    assert hashes[0] == hashes[1]
    other = evaluator_file.save_evaluator(_train_tiny(seed=1).net, tmp_path / "other.safetensors", {"dataset": "toy"})
    assert other != hashes[0]


def test_saved_file_is_plain_safetensors_with_metadata(tmp_path):
    net = FeatureNet(TINY)
    path = tmp_path / "ev.safetensors"
    sha = evaluator_file.save_evaluator(net, path, {"dataset": "toy", "train_command": "x"})
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    tensors = load_file(path)
    assert set(tensors) == set(net.state_dict())
    ev = evaluator_file.load_evaluator_file(path, expected_sha256=sha)
    assert ev.net.config == TINY and ev.metadata["train_command"] == "x" and ev.sha256 == sha
    assert not ev.net.training


def test_hash_check_refuses_tampered_weights(tmp_path):
    path = tmp_path / "ev.safetensors"
    sha = evaluator_file.save_evaluator(FeatureNet(TINY), path, {"dataset": "toy"})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # flip one bit of the last weight
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(UserError) as info:
        evaluator_file.load_evaluator_file(path, expected_sha256=sha)
    message = str(info.value)
    assert str(path) in message and sha in message and actual in message


def test_not_an_evaluator_file_is_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="junk.safetensors"):
        evaluator_file.load_evaluator_file(path, expected_sha256=None)


def test_shipped_evaluator_matches_its_pinned_hash():
    for name in assets.names("evaluator"):
        spec, dataset = assets.PACKAGED[name], name.removeprefix("evaluator-")
        path = assets.directory() / spec.filename
        assert sha256_file(path) == spec.sha256, f"{path} does not match its entry in assets.PACKAGED"
        ev = evaluator_file.load_evaluator(dataset)
        assert ev.sha256 == spec.sha256 and ev.metadata["dataset"] == dataset
        assert "mnist-diffusion evaluator train" in ev.metadata["train_command"]
