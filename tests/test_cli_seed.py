"""The seed recipe end to end through the CLI, on a few hundred images."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mnist_diffusion.cli import main
from mnist_diffusion.pipeline import load


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "seed-run"
    rc = main(
        [
            "train",
            "--recipe",
            "seed",
            "--limit",
            "256",
            "--epochs",
            "1",
            "--set",
            "train.batch_size=64",
            "--set",
            "train.log_every=1",
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert rc == 0
    return run


def test_train_writes_a_run_directory(seed_run):
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors", "samples.png"):
        assert (seed_run / name).is_file(), name
    cfg = json.loads((seed_run / "config.json").read_text())
    assert cfg["recipe"] == "seed" and cfg["data"]["limit"] == 256 and cfg["train"]["batch_size"] == 64
    rows = [json.loads(line) for line in (seed_run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_sample_writes_grid_and_npz(seed_run, tmp_path):
    out, npz = tmp_path / "g.png", tmp_path / "s.npz"
    assert main(["sample", str(seed_run), "--n", "12", "--steps", "5", "--out", str(out), "--npz", str(npz)]) == 0
    data = np.load(npz)
    assert data["images"].dtype == np.uint8 and data["images"].shape == (12, 28, 28)
    assert "labels" not in data and out.stat().st_size > 0


def test_sample_is_reproducible_per_image(seed_run, tmp_path):
    model = load(seed_run)
    a = model.sample(6, seed=3).images
    b = model.sample(3, seed=6).images  # image i uses seed + i: images 3..5 of the first call
    assert np.array_equal(a[3:], b)


def test_figures(seed_run):
    assert main(["figures", str(seed_run)]) == 0
    names = {p.name for p in (seed_run / "figures").iterdir()}
    assert {"1_corruption.png", "2_one_shot_denoising.png", "3_sampling_steps.png", "loss.png"} <= names


def test_existing_run_is_not_overwritten(seed_run, capsys):
    before = (seed_run / "model.safetensors").read_bytes()
    assert main(["train", "--recipe", "seed", "--limit", "256", "--out", str(seed_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (seed_run / "model.safetensors").read_bytes() == before


def test_bad_input_is_one_sentence(tmp_path, capsys):
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["sample", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "not a readable safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main(["sample", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--recipe", "seed", "--set", "train.nope=1", "--out", str(tmp_path / "r")]) == 2
    assert "train.nope" in capsys.readouterr().err


def test_console_script_help_and_exit_code(tmp_path):
    for cmd in (["--help"], ["train", "--help"], ["sample", "--help"], ["figures", "--help"]):
        r = subprocess.run([sys.executable, "-m", "mnist_diffusion", *cmd], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "mnist_diffusion", "figures", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "is not a run directory" in r.stderr
