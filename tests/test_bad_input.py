"""Every bad value on the command line is one sentence on stderr, exit code 2, no traceback, no file written:
values out of range (checked before memory or time is spent), damaged files and tampered training states."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mnist_diffusion import api
from mnist_diffusion.checkpoint import CHECKSUM_KEY, MODEL_FILE, STATE_FILE, weights_sha256
from mnist_diffusion.cli import main

TINY = {
    "data": {"limit": 64},
    "train": {"batch_size": 32, "max_steps": 2, "checkpoint_every": 2},
    "model": {"channels": [8, 16, 16], "embed_dim": 16, "groups": 4},
}


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested 100,000 deep: a RecursionError for a plain json.loads


def _read(src: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(src), "pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict


def _with_metadata(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint `src` with some metadata entries replaced (values written as given)."""
    meta, tensors = _read(src)
    for key, value in changes.items():
        meta[key] = value
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _tampered_state(run: Path, dst: Path, tensors=None, **info) -> Path:
    """A copy of run directory `run` whose training state has some tensors (name -> tensor, None = removed)
    or metadata fields (name -> JSON value, None = removed) changed, its checksum recomputed: what a buggy
    writer or another tool would leave, which only the resume's own checks can refuse."""
    shutil.copytree(run, dst)
    meta, saved = _read(run / STATE_FILE)
    for key, value in (tensors or {}).items():
        if value is None:
            del saved[key]
        else:
            saved[key] = value
    for key, value in info.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = json.dumps(value)
    meta[CHECKSUM_KEY] = weights_sha256(saved)
    save_file(saved, str(dst / STATE_FILE), metadata=meta)
    return dst


def _flipped(src: Path, dst: Path) -> Path:
    """A copy of `src` with one byte of its last tensor's data flipped (the header left whole)."""
    data = bytearray(src.read_bytes())
    data[-3] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny trained run, damaged checkpoints and input files, in a folder the commands run in."""
    root = tmp_path_factory.mktemp("bad-input")
    run = api.train("ddpm-cond", out=root / "run", progress=False, samples=False, **TINY)
    model = run / MODEL_FILE
    with safe_open(str(model), "pt") as f:
        config = json.loads(f.metadata()["config"])
    config["model"]["dropout"] = 5
    _with_metadata(model, root / "version.safetensors", format_version="abc")
    _with_metadata(model, root / "list-config.safetensors", config="[1, 2]")
    _with_metadata(model, root / "dropout.safetensors", config=json.dumps(config))
    _with_metadata(model, root / "extra.safetensors", extra="{not json")
    _with_metadata(model, root / "deep-config.safetensors", config=DEEP)
    _with_metadata(model, root / "deep-extra.safetensors", step=DEEP)
    _flipped(model, root / "flipped.safetensors")
    shutil.copytree(run, root / "flipped-run")
    _flipped(run / STATE_FILE, root / "flipped-run" / STATE_FILE)
    _tampered_resumes(run, root)
    (root / "deep.json").write_text(DEEP)
    (root / "precious.txt").write_text("keep me")
    (root / "list.json").write_text("[1, 2]")
    (root / "broken.json").write_text("{")
    (root / "folder").mkdir()
    np.savez(root / "float.npz", images=np.zeros((2, 28, 28), np.float32), mask=np.ones((2, 28, 28)))
    np.savez(root / "nomask.npz", images=np.zeros((2, 28, 28), np.uint8))
    np.savez(root / "allknown.npz", images=np.zeros((2, 28, 28), np.uint8), mask=np.ones((2, 28, 28), np.uint8))
    np.savez(root / "shape.npz", images=np.zeros((2, 28, 28), np.uint8), mask=np.ones((2, 14, 28), np.uint8))
    np.savez(root / "samples.npz", images=np.zeros((4, 28, 28), np.uint8))
    return root


def _tampered_resumes(run: Path, root: Path) -> None:
    """Run directories whose training state is wrong in one way each: resume-<what>."""
    meta, saved = _read(run / STATE_FILE)
    info = {k: json.loads(v) for k, v in meta.items() if k in ("optimizer",)}
    ema = next(k for k in saved if k.startswith("ema.") and saved[k].ndim == 4)
    fields = {
        "step-text": {"step": "2"},
        "step-negative": {"step": -1},
        "step-bool": {"step": True},
        "epoch-float": {"epoch": 0.5},
        "batch-huge": {"batch": 10**9},
        "ema-updates-text": {"ema_updates": "x"},
        "no-step": {"step": None},
        "no-optimizer": {"optimizer": None},
        "optimizer-groups": {"optimizer": {**info["optimizer"], "param_groups": []}},
        "optimizer-lr-text": {
            "optimizer": {**info["optimizer"], "param_groups": [{**info["optimizer"]["param_groups"][0], "lr": "x"}]}
        },
        "optimizer-scalars": {"optimizer": {**info["optimizer"], "scalars": {"nodot": 1}}},
    }
    for name, changes in fields.items():
        _tampered_state(run, root / f"resume-{name}", **changes)
    tensors = {
        "no-rng": {"rng.torch": None},
        "no-generator": {"rng.generator": None},
        "ema-shape": {ema: torch.zeros(1)},  # would broadcast into the EMA
        "model-dtype": {"model.out_conv.bias": saved["model.out_conv.bias"].double()},
        "unknown-tensor": {"model.extra": torch.zeros(2)},
        "optim-shape": {"optim.0.exp_avg": torch.zeros(3)},
    }
    for name, changes in tensors.items():
        _tampered_state(run, root / f"resume-{name}", changes)


RESUMES = [
    "step-text",
    "step-negative",
    "step-bool",
    "epoch-float",
    "batch-huge",
    "ema-updates-text",
    "no-step",
    "no-optimizer",
    "optimizer-groups",
    "optimizer-lr-text",
    "optimizer-scalars",
    "no-rng",
    "no-generator",
    "ema-shape",
    "model-dtype",
    "unknown-tensor",
    "optim-shape",
]

BAD = [
    # train: values out of range, wrong types, unknown keys
    "train --set train.lr=NaN",
    "train --set train.lr=inf",
    "train --set train.lr=abc",
    "train --set train.checkpoint_every=0",
    "train --set train.log_every=0",
    "train --set train.threads=-1",
    "train --set model.dropout=2.0",
    "train --set model.channels=[0,-1]",
    "train --set model.channels=[]",
    "train --set train.warmup_steps=-10",
    "train --set train.batch_size=0",
    "train --set train.ema_decay=1.5",
    "train --set diffusion.timesteps=5",
    "train --set nosuch.key=1",
    "train --set train.nosuch=1",
    "train --set train.lr",
    "train --max-steps -5",
    "train --max-steps 0",
    "train --epochs 0",
    "train --epochs -1",
    "train --limit 0",
    "train --limit -1",
    "train --recipe nosuch",
    "train --device tpu",
    "train --dataset cifar",
    "train --max-steps x",
    # train: config files, outputs, resume
    "train --config list.json",
    "train --config broken.json",
    "train --config missing.json",
    "train --config list.json --recipe seed",
    "train --out precious.txt",
    "train --out /proc/x/run",
    "train --resume run --recipe seed",
    "train --resume run --out elsewhere",
    "train --resume run --config list.json",
    "train --resume nothing",
    "train --resume run --set train.lr=1e-3",
    "train --config deep.json",
    "train --seed 100000000000001",
    "train --seed -1",
    "train --resume flipped-run --max-steps 4",
    *[f"train --resume resume-{name} --max-steps 4" for name in RESUMES],
    # sample
    "sample run --batch-size -1",
    "sample run --batch-size 0",
    "sample run --guidance nan",
    "sample run --guidance inf",
    "sample run --n 0",
    "sample run --n -3",
    "sample run --steps 0",
    "sample run --steps -1",
    "sample run --labels 11",
    "sample run --labels abc",
    "sample run --sampler nosuch",
    "sample run --eta 2",
    "sample run --guidance-interval 5,1",
    "sample run --guidance-interval abc",
    "sample run --out /proc/x/s.png",
    "sample run --out folder",
    "sample run --npz /proc/x/s.npz",
    "sample run --gif precious.txt/x.gif",
    "sample nosuch-model",
    "sample missing.safetensors",
    "sample version.safetensors",
    "sample list-config.safetensors",
    "sample dropout.safetensors",
    "sample extra.safetensors",
    "sample precious.txt",
    "sample run --device tpu",
    "sample run --nrow 0",
    # sample: bounds, checked before any memory or time is spent
    "sample run --n 2 --labels 0-999999999",
    "sample run --n 2 --labels 3-999999999999999999999",
    "sample run --n 1000001",
    "sample run --n 1000000000000",
    "sample run --batch-size 1000001",
    "sample run --seed -1",
    "sample run --seed 9223372036854775808",
    "sample run --guidance 1e308",
    "sample run --guidance 20.5",
    "sample run --guidance -1",
    "sample run --n 500 --out x.jpg",
    "sample run --out x",
    "sample run --npz x.png",
    "sample run --gif x.png",
    "sample deep-config.safetensors",
    "sample deep-extra.safetensors",
    "sample flipped.safetensors",
    # inpaint
    "inpaint run --input missing.npz --npz o.npz",
    "inpaint run --input float.npz --npz o.npz",
    "inpaint run --input nomask.npz --npz o.npz",
    "inpaint run --input allknown.npz --npz o.npz",
    "inpaint run --input shape.npz --npz o.npz",
    "inpaint run --input nomask.npz --keep middle --npz o.npz",
    "inpaint run --input nomask.npz --keep top --npz /proc/x/o.npz",
    "inpaint run --input nomask.npz --keep top --npz o.npz --resample 0",
    "inpaint run --input nomask.npz --keep top --npz o.npz --resample 1000000",
    "inpaint run --input nomask.npz --keep top --npz o.png",
    "inpaint run --input nomask.npz --keep top --npz o.npz --out o.jpg",
    "inpaint run --input nomask.npz --keep top --npz o.npz --seed 9223372036854775808",
    "inpaint run --input nomask.npz --keep top --npz o.npz --guidance 1e308 --labels 3",
    # evaluate
    "evaluate missing.npz",
    "evaluate samples.npz --json /proc/x",
    "evaluate samples.npz --json folder",
    "evaluate samples.npz --n 0",
    "evaluate samples.npz --dataset cifar",
    "evaluate samples.npz --steps 4",
    "evaluate run --n -1",
    "evaluate samples.npz --metrics nosuch",
    "evaluate samples.npz --kid-subsets 0",
    "evaluate samples.npz --kid-subsets 100000000",
    "evaluate samples.npz --kid-subset-size 1",
    "evaluate samples.npz --kid-subset-size 100000000",
    "evaluate samples.npz --seed -1",
    "evaluate run --n 0",
    "evaluate run --n 1000001",
    "evaluate run --metrics nosuch",
    # figures, classifier
    "figures nothing",
    "figures run --out /proc/x",
    "figures run --seed 9223372036854775808",
    "classifier train --seed -1",
    "classifier train --out /proc/x/e.safetensors",
    "classifier train --epochs 0",
    "classifier nosuch",
    # serve (refused before it listens)
    "serve nosuch-model",
    "serve run --port 0",
    "serve run --port 70000",
    "serve run --device tpu",
    # export and export-web (refused before anything is written)
    "export ldm --out ldm.onnx",
    "export run --out run.png",
    "export run --format tflite --out run.onnx",
    "export-web run --out run",
    "export-web ldm --out site",
    "export-web nosuch-model --out site",
]


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("command", BAD)
def test_bad_value_is_one_sentence_and_exit_2(world, command, capsys, monkeypatch):
    monkeypatch.chdir(world)
    before = _snapshot(world)
    code = main(command.split())
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (command, code, err)
    assert len(lines) == 1, (command, err)
    assert "Traceback" not in err and "error:" in lines[0], (command, err)
    assert _snapshot(world) == before, f"{command} changed files"
    assert not any(p.name.startswith(".") and p.suffix == ".tmp" for p in world.rglob("*"))


def test_the_table_covers_every_command():
    from mnist_diffusion.cli import SUBCOMMANDS

    covered = {c.split()[0] for c in BAD}
    names = {m.__name__.rsplit(".", 1)[1].removesuffix("_cmd") for m in SUBCOMMANDS}
    assert names <= covered, names - covered


def test_files_written_are_readable_by_others(world):
    mode = os.stat(world / "run" / MODEL_FILE).st_mode & 0o777
    assert mode == 0o666 & ~_umask(), oct(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
