import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.errors import CheckpointError
from mnist_diffusion.files import atomic_write, atomic_write_text
from mnist_diffusion.recipes import get_recipe


def test_model_round_trip_carries_config(tmp_path):
    cfg = get_recipe("seed")
    w = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    ckpt.save_model(tmp_path / "m.safetensors", cfg, w, {"step": 7})
    back = ckpt.load_checkpoint(tmp_path / "m.safetensors")
    assert back.config == cfg and back.kind == "model" and back.info["step"] == 7
    assert torch.equal(back.tensors["a"], w["a"]) and torch.equal(back.tensors["b"], w["b"])


def test_missing_and_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ckpt.load_checkpoint(bad)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not written by this tool"):
        ckpt.load_checkpoint(foreign)


def test_other_format_version_refused(tmp_path):
    cfg = get_recipe("seed")
    path = tmp_path / "old.safetensors"
    save_file(
        {"w": torch.zeros(2)}, str(path), metadata={"format_version": "0", "kind": "model", "config": cfg.to_json()}
    )
    with pytest.raises(CheckpointError, match="format version 0"):
        ckpt.load_checkpoint(path)


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "good")

    def boom(tmp):
        Path(tmp).write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_written_files_have_the_usual_mode(tmp_path):
    ckpt.save_model(tmp_path / "m.safetensors", get_recipe("seed"), {"w": torch.zeros(1)})
    atomic_write_text(tmp_path / "t.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.safetensors", "t.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_packaged_names_resolve_to_verified_files():
    assert ckpt.resolve_model_path(None).name == "ddpm-cond.safetensors"
    assert ckpt.resolve_model_path("ldm-ae").name == "ldm-ae.safetensors"
    with pytest.raises(CheckpointError, match="packaged name"):
        ckpt.resolve_model_path("no-such-model")


def test_run_directory_resolution(tmp_path):
    with pytest.raises(CheckpointError, match="holds no model.safetensors"):
        ckpt.resolve_model_path(tmp_path)
    ckpt.save_model(tmp_path / ckpt.MODEL_FILE, get_recipe("seed"), {"w": torch.zeros(1)})
    assert ckpt.resolve_model_path(tmp_path) == tmp_path / ckpt.MODEL_FILE
    assert json.loads(ckpt.read_metadata(tmp_path / ckpt.MODEL_FILE)["config"])["recipe"] == "seed"
