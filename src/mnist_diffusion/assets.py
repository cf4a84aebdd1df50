"""The files shipped inside the package -- models, autoencoders, evaluators -- in one registry, found by one loader.

Each entry pins its file's sha256: a packaged file whose bytes hash to anything else is refused, so every
figure the package prints comes from the weights its model card describes. Each file's card (how it was made
and what it scores) sits beside it as `<name>.md`.

To ship a new or retrained file: write it into `assets/` (`training.packaging`), paste the sha256 it prints
here, and write its card.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from mnist_diffusion.errors import UserError
from mnist_diffusion.files import sha256_file

AssetKind = Literal["model", "autoencoder", "evaluator"]


@dataclass(frozen=True)
class Asset:
    name: str
    kind: AssetKind
    filename: str
    sha256: str
    summary: str
    card: str  # the model card beside the file


PACKAGED: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            "ddpm-cond",
            "model",
            "ddpm-cond.safetensors",
            "98f953e3da4945a4a3628e7824a8297576b4736f23f52f2b32134024f066a029",
            "class-conditional pixel DDPM with classifier-free guidance (the default)",
            "ddpm-cond.md",
        ),
        Asset(
            "ldm",
            "model",
            "ldm.safetensors",
            "d3b5b9d21442a3deb45061278c8ac3437041e0a254d299fa4691527175bceba5",
            "class-conditional latent diffusion in the ldm-ae autoencoder's 4x7x7 latents",
            "ldm.md",
        ),
        Asset(
            "ddpm-cond-fast",
            "model",
            "ddpm-cond-fast.safetensors",
            "0ea595a0dd282533513aa1afd49c42e29eb8d7eff0656af314fd177ce5a1f3eb",
            "2-step student of ddpm-cond, guidance distilled in (one pass per step)",
            "ddpm-cond-fast.md",
        ),
        Asset(
            "ldm-fast",
            "model",
            "ldm-fast.safetensors",
            "06f5207589f1a41f78fc47369962d51e95150eb02e782786bcfb3cf9706c3983",
            "4-step student of ldm, guidance distilled in (one pass per step)",
            "ldm-fast.md",
        ),
        Asset(
            "flow-cond",
            "model",
            "flow-cond.safetensors",
            "bccf6d9dc3beb6e6a4e1408345bce2347dc41d302894f85a86650f895df2e450",
            "class-conditional pixel flow matching (velocity on the straight path), guidance on the velocity",
            "flow-cond.md",
        ),
        Asset(
            "meanflow",
            "model",
            "meanflow.safetensors",
            "42cd7c369b4fdca794ec82bbe22139cc7cf68d67c2977af70992afd97f7221da",
            "MeanFlow from flow-cond: guided digits in one network pass, guidance folded in by training",
            "meanflow.md",
        ),
        Asset(
            "ldm-ae",
            "autoencoder",
            "ldm-ae.safetensors",
            "db9f94d239c4e43d4e24336a989848a06555c736ba5734588b78abed17e8d6b4",
            "the KL autoencoder the ldm model runs inside",
            "ldm.md",
        ),
        Asset(
            "evaluator-mnist",
            "evaluator",
            "evaluator-mnist.safetensors",
            "7347027b45f484490db5957c04df528b44b652753cb6ab99e7967ec0cb88a407",
            "MNIST classifier whose features every sample metric uses",
            "evaluator-mnist.md",
        ),
        Asset(
            "evaluator-fashion-mnist",
            "evaluator",
            "evaluator-fashion-mnist.safetensors",
            "6f9d50b72614f8f90fef10c33c0b48d40e6b0542be0d4537cc47c79bdc0226ad",
            "Fashion-MNIST classifier for the same metrics",
            "evaluator-fashion-mnist.md",
        ),
    )
}
DEFAULT_MODEL = "ddpm-cond"


def names(kind: AssetKind) -> tuple[str, ...]:
    """The packaged names of one kind, e.g. names("model") -> ('ddpm-cond', 'ldm', 'ddpm-cond-fast', 'ldm-fast')."""
    return tuple(a.name for a in PACKAGED.values() if a.kind == kind)


def directory() -> Path:
    return Path(str(resources.files("mnist_diffusion") / "assets"))


def is_packaged(name: object, kind: AssetKind | None = None) -> bool:
    asset = PACKAGED.get(str(name)) if isinstance(name, (str, Path)) else None
    return asset is not None and (kind is None or asset.kind == kind)


def packaged_path(name: str, kind: AssetKind | None = None) -> Path:
    """The verified file of the packaged asset `name`; a missing or altered file is a UserError."""
    asset = PACKAGED.get(name)
    if asset is None or (kind is not None and asset.kind != kind):
        known = ", ".join(names(kind) if kind else PACKAGED)
        raise UserError(f"There is no packaged {kind or 'file'} called {name!r}; packaged: {known}.")
    path = directory() / asset.filename
    if not path.is_file():
        raise UserError(f"The packaged {asset.kind} {name!r} is missing from {path.parent}; reinstall mnist-diffusion.")
    _verify(str(path), asset.sha256, path.stat().st_mtime_ns)
    return path


def packaged_sha256(path: str | Path) -> str | None:
    """The pinned sha256 if `path` is one of the packaged files, else None."""
    path = Path(path).resolve()
    for asset in PACKAGED.values():
        if (directory() / asset.filename).resolve() == path:
            return asset.sha256
    return None


@functools.lru_cache(maxsize=16)
def _verify(path: str, expected: str, mtime_ns: int) -> None:
    # Once per file and modification time per process: hashing a few MB costs milliseconds, but not every call.
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(
            f"{path} has sha256 {actual} but the package pins {expected}; the file was changed or "
            "replaced, so its results would not be the documented ones -- reinstall mnist-diffusion."
        )
