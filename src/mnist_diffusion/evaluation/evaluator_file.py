"""Evaluator files: hash-checked loading and reproducible writing.

Every number a report prints depends on the evaluator's weights, so the weights are pinned: the sha256 of
each shipped file is in the package's one registry (`mnist_diffusion.assets`, names 'evaluator-<dataset>'),
and loading refuses a shipped file whose bytes hash to anything else. The hash is also recorded beside every
reference-statistics file and every report, so figures made with different networks are never compared or
mixed.

Weights are safetensors (no pickled code). The file's metadata holds:
``format`` ("mnist-diffusion-evaluator"), ``format_version``, ``config`` (EvaluatorConfig JSON),
``dataset``, ``train_command``, ``seed``, ``epochs``, ``test_accuracy``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from mnist_diffusion import assets
from mnist_diffusion.config import FORMAT_VERSION
from mnist_diffusion.errors import UserError
from mnist_diffusion.evaluation.network import EvaluatorConfig, FeatureNet
from mnist_diffusion.files import atomic_write_bytes

FORMAT = "mnist-diffusion-evaluator"


@dataclass(frozen=True)
class Evaluator:
    """A loaded, verified evaluator: the network (eval mode, CPU) and where it came from."""

    net: FeatureNet
    sha256: str
    path: pathlib.Path
    metadata: dict[str, str]

    @property
    def dataset(self) -> str:
        return self.metadata.get("dataset", "?")


def shipped_name(dataset: str) -> str:
    """The registry name of the evaluator shipped for `dataset`; a UserError if there is none."""
    name = f"evaluator-{dataset}"
    if not assets.is_packaged(name, "evaluator"):
        shipped = ", ".join(n.removeprefix("evaluator-") for n in assets.names("evaluator"))
        raise UserError(
            f"no evaluator is shipped for dataset {dataset!r} (shipped: {shipped}); train one with "
            f"`mnist-diffusion classifier train --dataset {dataset} --out FILE` and pass it with "
            "--evaluator FILE."
        )
    return name


def load_evaluator_file(path: pathlib.Path | str, expected_sha256: str | None) -> Evaluator:
    """Read and verify an evaluator file. expected_sha256=None accepts any hash (a user's own file);
    the actual hash is still returned and recorded with every result."""
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(
            f"cannot read evaluator weights {path} ({e.strerror}); reinstall the package or "
            "re-create the file with `mnist-diffusion evaluator train`."
        ) from None
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise UserError(
            f"evaluator weights {path} have sha256 {actual} but {expected_sha256} was expected; "
            "the file was changed or replaced, so its scores would not be comparable -- reinstall "
            "the package or restore the file."
        )
    try:
        tensors = load_safetensors_bytes(data)
        metadata = _read_metadata(data)
    except (SafetensorError, ValueError) as e:
        raise UserError(f"evaluator weights {path} are not a readable safetensors file ({e}).") from None
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"{path} is not an evaluator file (metadata 'format' is {metadata.get('format')!r}, expected {FORMAT!r})."
        )
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise UserError(
            f"{path} has evaluator format_version {metadata.get('format_version')!r}; this version "
            f"of mnist-diffusion reads {FORMAT_VERSION}."
        )
    net = FeatureNet(EvaluatorConfig.from_json(metadata.get("config", "{}"), source=str(path)))
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise UserError(f"evaluator weights {path} do not fit the architecture in their own metadata ({e}).") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return Evaluator(net=net, sha256=actual, path=path, metadata=metadata)


def _read_metadata(data: bytes) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then a JSON header whose
    # "__metadata__" entry is a str -> str map.
    if len(data) < 8:
        raise ValueError("file shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__", {}))


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, expected_sha256: str | None, mtime_ns: int) -> Evaluator:
    return load_evaluator_file(path, expected_sha256)


def load_evaluator(dataset: str = "mnist", path: pathlib.Path | str | None = None) -> Evaluator:
    """The evaluator for `dataset`: the shipped, hash-pinned one, or the file at `path` if given.

    Loaded once per process (cached on path, expected hash and modification time).
    """
    if path is None:
        name = shipped_name(dataset)
        file, expected = assets.directory() / assets.PACKAGED[name].filename, assets.PACKAGED[name].sha256
    else:
        file = pathlib.Path(path)
        expected = assets.packaged_sha256(file)
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        mtime = -1  # let load_evaluator_file produce the message
    return _load_cached(str(file), expected, mtime)


_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}


def canonical_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise to safetensors with a byte-for-byte reproducible layout.

    The safetensors library writes its metadata map in hash order, which changes from run to run, so
    the same weights would get a different sha256 each time. Here the header JSON has sorted keys and
    tensors are laid out in name order; the result is an ordinary safetensors file.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to an 8-byte boundary
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def save_evaluator(net: FeatureNet, path: pathlib.Path | str, metadata: dict[str, str]) -> str:
    """Write `net` with its config and `metadata` (str -> str) to `path`; returns the file's sha256."""
    meta = {
        **{k: str(v) for k, v in metadata.items()},
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": net.config.to_json(),
    }
    data = canonical_safetensors(net.state_dict(), meta)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()
