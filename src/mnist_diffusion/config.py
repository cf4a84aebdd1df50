"""Typed run configuration: one small frozen dataclass per component, nested in `RunConfig`.

Configs travel as JSON (run directories, checkpoint metadata). Loading rejects unknown keys with a
sentence that names the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from mnist_diffusion.errors import UserError

FORMAT_VERSION = 1  # bump when a checkpoint written by older code can no longer be read


class ConfigError(UserError, ValueError):
    """A configuration value or key a user supplied is wrong; the message says which and why."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"  # mnist | fashion-mnist
    data_dir: str | None = None  # directory of IDX files; None = packaged MNIST / cache
    value_range: str = "signed"  # "unit" = [0, 1] (the seed), "signed" = [-1, 1] (DDPM)
    limit: int | None = None  # use only the first N training images (tests, smoke runs)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "unet"  # basic_unet (the seed's) | unet | autoencoder (for latent diffusion) | latent_unet
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 64, 128)  # widths at 28, 14, 7
    blocks_per_level: int = 1
    attention_7x7: bool = True  # self-attention at the 7x7 level only (cheap there)
    num_classes: int = 0  # 0 = unconditional; 10 for MNIST digits (+1 "no label" entry inside)
    embed_dim: int = 128  # noise-level / class embedding width
    dropout: float = 0.0
    groups: int = 8  # GroupNorm groups
    latent_channels: int = 4  # autoencoder only: C of the (C, 7, 7) latent


@dataclass(frozen=True)
class DiffusionConfig:
    kind: str = "ddpm"  # seed (uniform-noise corrupt(), x0 MSE) | ddpm | autoencoder (reconstruction + KL)
    schedule: str = "linear"  # linear (Ho 2020) | cosine (Nichol & Dhariwal 2021)
    timesteps: int = 1000
    prediction: str = "eps"  # eps | x0 | v
    loss_weighting: str = "uniform"  # uniform | min_snr
    min_snr_gamma: float = 5.0
    kl_weight: float = 1e-6  # autoencoder only: weight of the KL term that keeps the latent smooth


@dataclass(frozen=True)
class LatentConfig:
    """Diffusion in an autoencoder's latent space (Rombach et al. 2022)."""

    autoencoder: str = "ldm-ae"  # run directory, checkpoint file or packaged name of the autoencoder
    autoencoder_sha256: str = ""  # hash of the autoencoder's weights; another autoencoder is refused
    scale: float = 1.0  # multiplies latents so the diffusion sees unit variance (measured on the training set)
    shape: tuple[int, ...] = (4, 7, 7)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 128  # global batch, whatever the number of processes
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float | None = None
    ema_decay: float | None = None  # None = no EMA (the seed)
    label_dropout: float = 0.1  # only for class-conditional models (classifier-free guidance)
    seed: int = 0
    checkpoint_every: int = 500  # optimizer steps between checkpoints (and at every epoch end)
    log_every: int = 50
    eval_every: int | None = None  # steps between in-training KID checks; None = never
    eval_samples: int = 500
    device: str = "auto"  # auto | cpu | cuda | mps
    bf16: bool = True  # bf16 autocast where the device runs it fast (CUDA)
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None  # CPU threads; None = torch's default


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "dpmpp_2m"
    steps: int = 20
    guidance: float = 1.0
    spacing: str = "trailing"  # leading | linspace | trailing | karras (Karras et al. 2022, rho = 7)
    eta: float = 0.0  # DDIM only: 0 = deterministic, 1 = DDPM-like


@dataclass(frozen=True)
class RunConfig:
    recipe: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    latent: LatentConfig | None = None  # set for latent diffusion: the autoencoder the diffusion runs inside
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` and convert JSON forms (list -> tuple, int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(f"{where}: unexpected value {value!r}")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object of settings, got {value!r}.")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object, got {value!r}.")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}.")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    raise ConfigError(f"{where}: unsupported setting type {tp!r}.")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and ill-typed values."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"Unknown setting '{where}.{key}'; known settings of {where} are: {', '.join(sorted(known))}."
            )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_run_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """A `RunConfig` from its JSON dict; `source` names the file in error messages."""
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{source} has format_version {version}, but this version of mnist-diffusion reads "
            f"format_version {FORMAT_VERSION}; retrain, or use the release that wrote it."
        )
    try:
        cfg = from_dict(RunConfig, data, "config")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    validate(cfg)
    return cfg


def _parse_literal(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, true/false/null, lists), else a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` overrides (e.g. `train.lr=2e-4`, `model.channels=[32,64,64]`)."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value, e.g. train.lr=2e-4.")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        node = data
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node.get(key), dict):
                raise ConfigError(f"--set {item!r}: '{'.'.join(keys[: depth + 1])}' is not a config section.")
            node = node[key]
        if keys[-1] not in node:
            raise ConfigError(
                f"--set {item!r}: unknown setting '{path}'; known here: {', '.join(sorted(node))}."
            )
        node[keys[-1]] = _parse_literal(text)
    return load_run_config(data, "--set")


CHOICES = {
    ("data", "dataset"): ("mnist", "fashion-mnist"),
    ("data", "value_range"): ("unit", "signed"),
    ("model", "kind"): ("basic_unet", "unet", "autoencoder", "latent_unet"),
    ("diffusion", "kind"): ("seed", "ddpm", "autoencoder"),
    ("diffusion", "schedule"): ("linear", "cosine"),
    ("diffusion", "prediction"): ("eps", "x0", "v"),
    ("diffusion", "loss_weighting"): ("uniform", "min_snr"),
    ("train", "optimizer"): ("adam", "adamw"),
    ("train", "device"): ("auto", "cpu", "cuda", "mps"),
    ("sample", "spacing"): ("leading", "linspace", "trailing", "karras"),
}


def validate(cfg: RunConfig) -> None:
    """Check choices and ranges; raise `ConfigError` naming the first bad setting."""
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise ConfigError(f"{section}.{key} is {value!r}; choose one of: {', '.join(allowed)}.")
    positive = [
        ("train", "epochs"), ("train", "batch_size"), ("diffusion", "timesteps"), ("sample", "steps"),
        ("model", "in_channels"), ("model", "blocks_per_level"), ("model", "embed_dim"), ("model", "groups"),
    ]
    for section, key in positive:
        if getattr(getattr(cfg, section), key) < 1:
            raise ConfigError(f"{section}.{key} must be at least 1, got {getattr(getattr(cfg, section), key)}.")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr must be positive, got {cfg.train.lr}.")
    if cfg.train.ema_decay is not None and not 0.0 < cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be between 0 and 1 (or null for none), got {cfg.train.ema_decay}.")
    if not 0.0 <= cfg.train.label_dropout < 1.0:
        raise ConfigError(f"train.label_dropout must be in [0, 1), got {cfg.train.label_dropout}.")
    if not cfg.model.channels:
        raise ConfigError("model.channels must list at least one width.")
    pairs = {"basic_unet": "seed", "unet": "ddpm", "latent_unet": "ddpm", "autoencoder": "autoencoder"}
    if pairs[cfg.model.kind] != cfg.diffusion.kind:
        raise ConfigError(
            f"model.kind {cfg.model.kind} goes with diffusion.kind {pairs[cfg.model.kind]}, not {cfg.diffusion.kind}."
        )


def with_changes(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A copy of `cfg` with some settings of some sections replaced, e.g. train={"epochs": 1}."""
    return replace(cfg, **{name: replace(getattr(cfg, name), **kw) for name, kw in sections.items()})
