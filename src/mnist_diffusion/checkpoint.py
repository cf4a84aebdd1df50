"""Self-describing checkpoints in safetensors, written atomically.

Two kinds of file, both carrying the resolved run config and the format version in their metadata:

- `model.safetensors` (kind "model"): the weights that sample (the EMA where there is one). This is what
  `sample`, `evaluate` and `figures` read; nothing else is needed beside it.
- `checkpoint.safetensors` (kind "training-state"): raw and EMA weights, optimizer moments, RNG states and the
  position in the data order, so `train --resume` continues exactly where it stopped.

No pickle anywhere: tensors go in safetensors, everything else in JSON metadata. The metadata also holds the
sha256 of the tensors (`weights_sha256`), checked on every load, so flipped bytes are refused rather than
sampled; files written before it was recorded load unchecked (the packaged ones are pinned by their file hash).
"""

from __future__ import annotations

import hashlib
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
from mnist_diffusion.errors import CheckpointError, UserError
from mnist_diffusion.files import atomic_write, parse_json

MODEL_FILE = "model.safetensors"
STATE_FILE = "checkpoint.safetensors"
CHECKSUM_KEY = "tensors_sha256"  # metadata: `weights_sha256` of the file's tensors, checked on load
_OWN_KEYS = ("config", "format_version", "kind", CHECKSUM_KEY)  # metadata that is not a writer's `info`


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors themselves (sorted names, dtypes, shapes, bytes), not the file.

    Files differ in their metadata (step, config, a packaged copy's card) while holding the same weights;
    hashing the tensors names the weights, whatever file they sit in.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _metadata(cfg: RunConfig, kind: str, extra: dict[str, Any] | None = None) -> dict[str, str]:
    meta = {"format_version": str(FORMAT_VERSION), "kind": kind, "config": cfg.to_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    return meta


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Tensors and metadata (plus the tensors' sha256) into `path`, atomically; a failed write is one sentence
    (`files.WriteFailed`) and leaves the previous file."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {**metadata, CHECKSUM_KEY: weights_sha256(tensors)}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except SafetensorError as e:  # how safetensors reports a full disk: make it the OSError it is
            raise OSError(str(e).splitlines()[0] if str(e) else "safetensors could not write it") from None

    atomic_write(path, write)


def save_model(
    path: Path, cfg: RunConfig, weights: dict[str, torch.Tensor], extra: dict[str, Any] | None = None
) -> None:
    """Write sampling weights with their config (atomically)."""
    _write(path, weights, _metadata(cfg, "model", extra))


def save_training_state(path: Path, cfg: RunConfig, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write the full training state: `tensors` (prefixed model./ema./optim./rng.) and JSON-able `info`."""
    _write(path, tensors, _metadata(cfg, "training-state", info))


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
        cfg = load_run_config(parse_json(meta["config"], f"{path}'s config"), str(path))
        info = {k: parse_json(v, f"{path}'s metadata {k!r}") for k, v in meta.items() if k not in _OWN_KEYS}
        tensors = load_file(str(path), device="cpu")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except CheckpointError:
        raise
    except UserError as e:  # metadata that is not JSON, too large or too deep
        raise CheckpointError(str(e)) from None
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt and cannot be read ({e}).") from None
    _verify(path, tensors, meta.get(CHECKSUM_KEY))
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return Loaded(path=path, config=cfg, kind=kind, tensors=tensors, info=info)


def _verify(path: Path, tensors: dict[str, torch.Tensor], expected: str | None) -> None:
    """Refuse tensors whose sha256 is not the one recorded when the file was written (none recorded: as before)."""
    if expected is None:
        return
    actual = weights_sha256(tensors)
    if actual != expected:
        raise CheckpointError(
            f"{path} is damaged: its tensors hash to {actual[:16]}..., not to the {expected[:16]}... recorded when "
            "it was written; use another copy of it, or retrain."
        )


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


def check_tensors(path: Path | str, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse, before anything is loaded, `tensors` whose names, shapes or dtypes are not those of `expected`
    (name -> a tensor of the right shape and dtype): one sentence naming the first difference."""
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        what = f"lacks {missing[0]!r}" if missing else f"holds {unknown[0]!r}, which"
        more = len(missing) + len(unknown) - 1
        extra = f" (and {more} more difference{'s' if more > 1 else ''})" if more else ""
        raise CheckpointError(
            f"{path} {what}{'' if missing else ' this run does not have'}{extra}; it is not a training state "
            "of this run's network and optimizer."
        )
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"{path} holds {name!r} as {got.dtype} {tuple(got.shape)}, but this run's is {want.dtype} "
                f"{tuple(want.shape)}; the file is damaged or belongs to another run."
            )


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `tensors` under `prefix.`, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
