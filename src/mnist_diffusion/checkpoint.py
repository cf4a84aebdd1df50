"""Self-describing checkpoints in safetensors, written atomically.

Two kinds of file, both carrying the resolved run config and the format version in their metadata:

- `model.safetensors` (kind "model"): the weights that sample (the EMA where there is one). This is what
  `sample`, `evaluate` and `figures` read; nothing else is needed beside it.
- `checkpoint.safetensors` (kind "training-state"): raw and EMA weights, optimizer moments, RNG states and the
  position in the data order, so `train --resume` continues exactly where it stopped.

No pickle anywhere: tensors go in safetensors, everything else in JSON metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from mnist_diffusion import assets
from mnist_diffusion.config import FORMAT_VERSION, ConfigError, RunConfig, load_run_config
from mnist_diffusion.errors import CheckpointError
from mnist_diffusion.files import atomic_write

MODEL_FILE = "model.safetensors"
STATE_FILE = "checkpoint.safetensors"


def _metadata(cfg: RunConfig, kind: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    meta = {"format_version": str(FORMAT_VERSION), "kind": kind, "config": cfg.to_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return meta


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_model(
    path: Path, cfg: RunConfig, weights: dict[str, torch.Tensor], extra: dict[str, Any] | None = None
) -> None:
    """Write sampling weights with their config (atomically)."""
    atomic_write(path, lambda tmp: save_file(_contiguous(weights), tmp, metadata=_metadata(cfg, "model", extra)))


def save_training_state(path: Path, cfg: RunConfig, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write the full training state: `tensors` (prefixed model./ema./optim./rng.) and JSON-able `info`."""
    atomic_write(
        path, lambda tmp: save_file(_contiguous(tensors), tmp, metadata=_metadata(cfg, "training-state", info))
    )


@dataclass
class Loaded:
    """A checkpoint read back: its config, tensors, kind and any extra metadata (decoded from JSON)."""

    path: Path
    config: RunConfig
    kind: str
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any]


def read_metadata(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist; give a run directory or a .safetensors file.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e}).") from None


def load_checkpoint(path: Path, device: str | torch.device = "cpu", expect_kind: str | None = None) -> Loaded:
    """Read a checkpoint written by `save_model` or `save_training_state`, checking its format version."""
    path = Path(path)
    meta = read_metadata(path)
    if "config" not in meta or "format_version" not in meta:
        raise CheckpointError(f"{path} has no mnist-diffusion config in its metadata; it was not written by this tool.")
    version = meta["format_version"]
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, but this version of mnist-diffusion reads "
            f"version {FORMAT_VERSION}; use the release that wrote it."
        )
    kind = meta.get("kind", "model")
    if kind not in ("model", "training-state"):
        raise CheckpointError(
            f"{path} says it holds a {kind!r} checkpoint; this tool writes 'model' and "
            "'training-state' checkpoints only."
        )
    if expect_kind and kind != expect_kind:
        raise CheckpointError(f"{path} holds a {kind} checkpoint, but a {expect_kind} checkpoint is needed here.")
    try:
        cfg = load_run_config(json.loads(meta["config"]), str(path))
        info = {k: json.loads(v) for k, v in meta.items() if k not in ("config", "format_version", "kind")}
        tensors = load_file(str(path), device=str(device))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt and cannot be read ({e}).") from None
    return Loaded(path=path, config=cfg, kind=kind, tensors=tensors, info=info)


def resolve_model_path(path_or_name: str | Path | None) -> Path:
    """None -> the default packaged model; a packaged name ('ddpm-cond', 'ldm-ae', ...) -> its verified file;
    a run directory -> its model.safetensors (else its checkpoint); a file -> itself. Names what is missing."""
    if path_or_name is None:
        return assets.packaged_path(assets.DEFAULT_MODEL)
    p = Path(path_or_name)
    if assets.is_packaged(path_or_name) and not p.exists():
        return assets.packaged_path(str(path_or_name))
    if p.is_dir():
        for name in (MODEL_FILE, STATE_FILE):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"Run directory {p} holds no {MODEL_FILE} yet; train it first or give a checkpoint file.")
    if not p.exists():
        packaged = ", ".join(n for n in assets.PACKAGED if assets.PACKAGED[n].kind != "evaluator")
        raise CheckpointError(
            f"{p} does not exist; give a run directory, a .safetensors checkpoint or a packaged name ({packaged})."
        )
    return p


def model_weights(loaded: Loaded) -> dict[str, torch.Tensor]:
    """The weights that sample from a checkpoint of either kind: a training state's EMA if it has one, else its
    raw weights; a model file's weights as they are."""
    if loaded.kind == "training-state":
        return split_prefix(loaded.tensors, "ema") or split_prefix(loaded.tensors, "model")
    return loaded.tensors


def load_weights(net: nn.Module, weights: dict[str, torch.Tensor], path: Path | str) -> nn.Module:
    """`net.load_state_dict(weights)`, with a mismatch reported as a CheckpointError naming `path`."""
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match the network its config describes ({first}).") from None
    return net


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `tensors` under `prefix.`, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
