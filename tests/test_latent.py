"""Latent diffusion end to end on ~128 images: autoencoder and latent model trained a few steps via the CLI,
the latent scale, checkpoint round trips, and the refusals (missing / different autoencoder, wrong shape)."""

import copy
import json

import numpy as np
import pytest
import torch

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.cli import main
from mnist_diffusion.config import ModelConfig, RunConfig, with_changes
from mnist_diffusion.data import load_split, to_float, training_images
from mnist_diffusion.errors import CheckpointError
from mnist_diffusion.latent import (
    FrozenAutoencoder,
    load_autoencoder,
    read_autoencoder,
    reconstruction_psnr,
    weights_sha256,
)
from mnist_diffusion.models.autoencoder import Autoencoder
from mnist_diffusion.pipeline import load
from mnist_diffusion.precision import PrecisionChoice
from mnist_diffusion.training.latent_binding import measure_scale
from mnist_diffusion.training.packaging import package_pipeline

torch.set_num_threads(1)
COMMON = ["--limit", "128", "--set", "train.batch_size=64", "--set", "train.threads=1", "--no-progress"]
TINY_AE = ["--set", "model.channels=[8,16,16]"]
TINY_LDM = ["--set", "model.channels=[16,32]", "--set", "model.embed_dim=32"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    ae, ldm = root / "ae", root / "ldm"
    assert (
        main(["train", "--recipe", "ldm-ae", "--max-steps", "3", "--out", str(ae), "--no-samples", *COMMON, *TINY_AE])
        == 0
    )
    assert (
        main(
            [
                "train",
                "--recipe",
                "ldm",
                "--max-steps",
                "2",
                "--out",
                str(ldm),
                "--no-samples",
                "--set",
                f"latent.autoencoder={ae}",
                *COMMON,
                *TINY_LDM,
            ]
        )
        == 0
    )
    return ae, ldm


def test_weights_hash_names_the_weights_not_the_file():
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    assert weights_sha256(a) == weights_sha256(dict(reversed(list(a.items()))))
    assert weights_sha256(a) != weights_sha256({**a, "b": torch.tensor([0.0, 0.0, 1e-6])})
    assert weights_sha256(a) != weights_sha256({**a, "b": torch.zeros(3, dtype=torch.float64)})


def test_latent_scale_gives_unit_std_on_the_training_latents():
    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(kind="autoencoder", channels=(8, 16, 16)))
    ae = FrozenAutoencoder(Autoencoder(cfg.model).eval(), cfg, "", None)
    images, _ = load_split("mnist", "train")
    images = images[:128]
    scale = measure_scale(ae, images, "signed", batch_size=50)  # batches must not change the result
    z = ae.encode(to_float(images, "signed")) * scale
    assert z.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)


def test_an_autoencoder_run_in_bf16_casts_its_weights_and_takes_and_gives_fp32():
    torch.manual_seed(0)
    cfg = RunConfig(model=ModelConfig(kind="autoencoder", channels=(8, 16, 16)))
    fp32 = FrozenAutoencoder(Autoencoder(cfg.model).eval(), cfg, "", None).run_in(PrecisionChoice("fp32", "test"))
    bf16 = FrozenAutoencoder(copy.deepcopy(fp32.net), cfg, "", None).run_in(PrecisionChoice("bf16", "test"))
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    x = to_float(load_split("mnist", "test")[0][:4], "signed")
    z32, z16 = fp32.encode(x), bf16.encode(x)
    assert z16.dtype == torch.float32 and z16.shape == z32.shape == (4, *fp32.latent_shape)
    assert 0 < (z16 - z32).abs().max() < 0.05 * z32.abs().max()  # bf16's rounding
    x32, x16 = fp32.decode(z32), bf16.decode(z32)
    assert x16.dtype == torch.float32 and 0 < (x16 - x32).abs().max() < 0.05
    # the same numerics as the bf16 network called by hand: bf16 in, bf16 throughout, fp32 out
    with torch.no_grad():
        assert torch.equal(x16, bf16.net.decode(z32.to(torch.bfloat16)).float())


def test_ldm_run_records_its_autoencoder(runs):
    ae_dir, ldm_dir = runs
    cfg = json.loads((ldm_dir / "config.json").read_text())["latent"]
    ae = read_autoencoder(ckpt.resolve_model_path(ae_dir))
    assert cfg["autoencoder_sha256"] == ae.sha256 and len(ae.sha256) == 64
    assert cfg["scale"] > 0 and cfg["shape"] == [4, 7, 7]
    images, _ = training_images(load(ldm_dir).config.data)
    assert measure_scale(ae, images, "signed") == pytest.approx(cfg["scale"], rel=1e-9)


def test_ldm_checkpoint_round_trip_and_sampling(runs, tmp_path):
    _, ldm_dir = runs
    model = load(ldm_dir)
    assert model.config.latent is not None and model.autoencoder is not None
    state = ckpt.load_checkpoint(ldm_dir / ckpt.STATE_FILE)
    assert state.config == model.config  # the training state carries the same bound config
    out = model.sample(6, steps=3, labels="0-9", guidance=2.0, seed=1)
    images, labels = out.images, out.labels
    assert images.dtype == np.uint8 and images.shape == (6, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    again = model.sample(3, steps=3, labels=[3, 4, 5], guidance=2.0, seed=4).images  # image i uses seed + i
    assert np.array_equal(images[3:], again)
    npz = tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                str(ldm_dir),
                "--n",
                "4",
                "--steps",
                "2",
                "--out",
                str(tmp_path / "s.png"),
                "--npz",
                str(npz),
                "--gif",
                str(tmp_path / "s.gif"),
            ]
        )
        == 0
    )
    assert np.load(npz)["images"].shape == (4, 28, 28) and (tmp_path / "s.gif").stat().st_size > 0


def test_resume_keeps_the_binding(runs):
    _, ldm_dir = runs
    before = json.loads((ldm_dir / "config.json").read_text())
    assert main(["train", "--resume", str(ldm_dir), "--max-steps", "3", "--no-progress", "--no-samples"]) == 0
    state = ckpt.load_checkpoint(ldm_dir / ckpt.STATE_FILE)
    assert state.info["step"] == 3 and state.config.latent.scale == before["latent"]["scale"]


def _other_autoencoder(ae_dir, out):
    """A copy of the autoencoder at ae_dir with one weight nudged: a different autoencoder."""
    loaded = ckpt.load_checkpoint(ckpt.resolve_model_path(ae_dir))
    weights = dict(loaded.tensors)
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    ckpt.save_model(out, loaded.config, weights)
    return out


def test_a_different_autoencoder_is_refused(runs, tmp_path, capsys):
    ae_dir, ldm_dir = runs
    other = _other_autoencoder(ae_dir, tmp_path / "other.safetensors")
    cfg = load(ldm_dir).config
    pinned = cfg.latent.autoencoder_sha256
    swapped = with_changes(cfg, latent={"autoencoder": str(other)})
    with pytest.raises(CheckpointError) as info:
        load_autoencoder(swapped.latent, user=str(ldm_dir))
    message = str(info.value)
    assert pinned in message and read_autoencoder(other).sha256 in message
    # A training-state checkpoint pointed at the other autoencoder is refused on load, too.
    path = tmp_path / "swapped.safetensors"
    ckpt.save_model(path, swapped, load(ldm_dir).net.state_dict())
    assert main(["sample", str(path), "--n", "2", "--out", str(tmp_path / "x.png")]) == 2
    assert "hashes to" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "setting, words",
    [
        ("latent.autoencoder={missing}", "does not exist"),
        ("latent.shape=[3,7,7]", "makes latents of shape [4, 7, 7]"),
        ("data.value_range=unit", "was trained with 'signed'"),
    ],
)
def test_bad_latent_settings_write_nothing(runs, tmp_path, capsys, setting, words):
    ae_dir, _ = runs
    out = tmp_path / "run"
    args = [
        "train",
        "--recipe",
        "ldm",
        "--max-steps",
        "1",
        "--out",
        str(out),
        "--set",
        f"latent.autoencoder={ae_dir}",
        "--set",
        setting.format(missing=tmp_path / "nope"),
        *COMMON,
        *TINY_LDM,
    ]
    assert main(args) == 2
    assert words in capsys.readouterr().err and not out.exists()


def test_autoencoder_run_samples_are_reconstructions(runs, tmp_path):
    ae_dir, _ = runs
    model = load(ae_dir)
    out = model.sample(5, seed=2)
    rec, labels = out.images, out.labels
    test_images, test_labels = load_split("mnist", "test")
    assert rec.shape == (5, 28, 28) and labels.tolist() == test_labels[2:7].tolist()
    assert 0 < reconstruction_psnr(test_images[2:7], rec) < 100
    assert main(["figures", str(ae_dir), "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"autoencoder_reconstructions.png", "latent_channels.png", "latent_interpolation.png"} <= names


def test_package_pipeline_names_the_packaged_autoencoder(runs, tmp_path):
    ae_dir, ldm_dir = runs
    ldm_path, ae_path = package_pipeline(ldm_dir, tmp_path, {"note": "test"})
    packed = ckpt.load_checkpoint(ldm_path)
    original = load(ldm_dir).config
    assert packed.config.latent.autoencoder == "ldm-ae" and packed.info["note"] == "test"
    assert packed.config.latent.autoencoder_sha256 == original.latent.autoencoder_sha256
    assert read_autoencoder(ae_path).sha256 == read_autoencoder(ckpt.resolve_model_path(ae_dir)).sha256
    assert packed.config.latent.scale == original.latent.scale


def test_package_pipeline_can_set_the_shipped_guidance(runs, tmp_path):
    _, ldm_dir = runs
    ldm_path, _ = package_pipeline(ldm_dir, tmp_path, guidance=2.5)
    packed = ckpt.load_checkpoint(ldm_path).config
    assert packed.sample.guidance == 2.5
    assert packed.model == load(ldm_dir).config.model
