"""Turn a network's output (eps, x0 or v) into both x0 and eps, with classifier-free guidance.

The conversions are pure functions of x_t and the VP coefficients alpha = sqrt(alpha_bar),
sigma = sqrt(1 - alpha_bar) (so alpha^2 + sigma^2 = 1); `alpha`/`sigma` may be Python floats or
tensors that broadcast against x_t, e.g. (B, 1, 1, 1).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable

import torch

from mnist_diffusion.config import Prediction
from mnist_diffusion.diffusion.schedule import NoiseSchedule
from mnist_diffusion.errors import UserError

PREDICTIONS = typing.get_args(Prediction)


def check_prediction(prediction: str) -> None:
    """Refuse a prediction type other than 'eps', 'x0' or 'v' with a sentence naming it."""
    if prediction not in PREDICTIONS:
        raise UserError(f"Unknown prediction type {prediction!r}; choose one of: {', '.join(PREDICTIONS)}.")


def _attribute(net, name: str):
    """`net.<name>`, looking through wrappers such as DistributedDataParallel and torch.compile; None if absent."""
    for candidate in (net, getattr(net, "module", None), getattr(net, "_orig_mod", None)):
        value = getattr(candidate, name, None)
        if value is not None:
            return value
    return None


def num_classes_of(net) -> int:
    """`net.num_classes` (0 = unconditional), looking through wrappers such as DistributedDataParallel."""
    return int(_attribute(net, "num_classes") or 0)


def takes_guidance(net) -> bool:
    """Whether `net` takes the guidance scale as an input (a distilled student) instead of being guided."""
    return bool(_attribute(net, "guidance_input"))


def x0_from_eps(x_t, eps, alpha, sigma):
    """x0 = (x_t - sigma eps) / alpha (inverting Ho et al. 2020 eq. 4)."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t, x0, alpha, sigma):
    """eps = (x_t - alpha x0) / sigma."""
    return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0, eps, alpha, sigma):
    """v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4)."""
    return alpha * eps - sigma * x0


def x0_from_v(x_t, v, alpha, sigma):
    """x0 = alpha x_t - sigma v (from alpha^2 + sigma^2 = 1)."""
    return alpha * x_t - sigma * v


def eps_from_v(x_t, v, alpha, sigma):
    """eps = sigma x_t + alpha v."""
    return sigma * x_t + alpha * v


def velocity_from_x0_eps(x0, eps):
    """The flow-matching velocity v = eps - x0 (Lipman et al. 2023; `flow.py`)."""
    return eps - x0


def x0_eps_from_velocity(x_t, v, alpha, sigma):
    """(x0, eps) from a velocity v = eps - x0 on a path x_t = alpha x0 + sigma eps: x0 = (x_t - sigma v) /
    (alpha + sigma), eps = x0 + v (on the straight path of flow matching alpha + sigma = 1)."""
    x0 = (x_t - sigma * v) / (alpha + sigma)
    return x0, x0 + v


def to_x0_eps(x_t, out, prediction: str, alpha, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from a network output `out` that predicts `prediction` ('eps' | 'x0' | 'v')."""
    if prediction == "eps":
        return x0_from_eps(x_t, out, alpha, sigma), out
    if prediction == "x0":
        return out, eps_from_x0(x_t, out, alpha, sigma)
    if prediction == "v":
        return x0_from_v(x_t, out, alpha, sigma), eps_from_v(x_t, out, alpha, sigma)
    if prediction == "velocity":
        return x0_eps_from_velocity(x_t, out, alpha, sigma)
    check_prediction(prediction)
    raise AssertionError("unreachable")


def target_for(prediction: str, x0, eps, alpha, sigma):
    """What a network predicting `prediction` should output for this (x0, eps) pair."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return v_from_x0_eps(x0, eps, alpha, sigma)
    if prediction == "velocity":
        return velocity_from_x0_eps(x0, eps)
    check_prediction(prediction)
    raise AssertionError("unreachable")


def net_time(t, like: torch.Tensor) -> torch.Tensor:
    """The (B,) timestep tensor handed to the network for a batch like `like` (B, C, H, W).

    t: a scalar (same step for every sample) or (B,). float32 (float64 for float64 inputs) on
    like's device; never bf16/fp16, which cannot hold 999 exactly.
    """
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    if isinstance(t, (int, float)):
        return torch.full((like.shape[0],), float(t), dtype=dtype, device=like.device)
    t = torch.as_tensor(t).to(like.device, dtype)
    return t.expand(like.shape[0]) if t.ndim == 0 else t


def _scale(guidance) -> float | torch.Tensor:
    return guidance if torch.is_tensor(guidance) else float(guidance)


class Denoiser:
    """D(x_t, t) -> (x0, eps) for a network `net(x_t, t, labels)` that predicts eps, x0 or v.

    The conditioning is bound in: `labels` (B,) long or None, the classifier-free guidance scale `guidance`
    (1 = plain conditional; a float, or a (B,) tensor of one scale per sample) and optionally
    `guidance_interval` = (low, high), the VE noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) between
    which guidance applies (Kynkaanniemi et al. 2024, low < sigma <= high); outside it the denoiser makes the
    plain conditional pass, at half the cost. So samplers only ever call `denoiser(x_t, t)`; `bind` gives a copy
    with other conditioning. A net that takes the guidance scale as an input (`takes_guidance`: a distilled
    student) gets it and makes one pass at any scale.

    guide: autoguidance (Karras et al. 2024) -- a weaker network of the same kind and prediction (an earlier or
    smaller model), called with the same labels, stands where classifier-free guidance puts the unconditional
    pass: out_guide + w (out - out_guide). One pass of each network per guided step: as many rows as
    classifier-free guidance runs.

    clip: optional (low, high) data range; x0 is clamped to it and eps recomputed from the clamped
    x0, so the pair stays consistent with x_t (what DDIM-style updates need).
    """

    def __init__(
        self,
        net: Callable[..., torch.Tensor],
        schedule: NoiseSchedule,
        prediction: str = "eps",
        clip: tuple[float, float] | None = None,
        labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
        guide: Callable[..., torch.Tensor] | None = None,
    ):
        check_prediction(prediction)
        self.net, self.guide = net, guide
        self.schedule = schedule
        self.prediction = prediction
        self.clip = clip
        self.num_classes = num_classes_of(net)
        self.guidance_input = takes_guidance(net)
        if guide is not None and (self.guidance_input or takes_guidance(guide) or not num_classes_of(guide)):
            raise UserError(
                "Autoguidance needs a guided class-conditional model and a guide of the same kind; "
                "a distilled student or an unconditional model cannot take part."
            )
        self._cache: dict[float, tuple[float, float]] = {}
        self._check_conditioning(labels, guidance, guidance_interval)
        self.labels, self.guidance, self.guidance_interval = labels, _scale(guidance), guidance_interval

    def bind(
        self,
        labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
    ) -> Denoiser:
        """The same denoiser with other conditioning (it shares the coefficient cache)."""
        other = Denoiser.__new__(Denoiser)
        other.__dict__.update(self.__dict__)
        other._check_conditioning(labels, guidance, guidance_interval)
        other.labels, other.guidance, other.guidance_interval = labels, _scale(guidance), guidance_interval
        return other

    def _check_conditioning(self, labels, guidance, interval) -> None:
        if torch.is_tensor(guidance):
            if guidance.ndim != 1 or not bool(torch.isfinite(guidance).all() and (guidance >= 0).all()):
                raise UserError(
                    f"Per-sample guidance scales must be a 1-D tensor of finite numbers >= 0, got "
                    f"shape {tuple(guidance.shape)}."
                )
            if labels is None or guidance.shape[0] != labels.shape[0]:
                raise UserError("Per-sample guidance scales need one class label per scale.")
        elif not math.isfinite(guidance) or guidance < 0:
            raise UserError(f"The guidance scale must be a finite number >= 0, got {guidance}.")
        if interval is not None and self.guidance_input:
            raise UserError(
                "This model has its guidance distilled in, so a guidance interval does not apply; "
                "leave the guidance interval out."
            )
        if labels is not None:
            if self.num_classes == 0:
                raise UserError("This model is unconditional, so it takes no class labels; sample without them.")
            if labels.ndim != 1 or labels.dtype != torch.long or labels.min() < 0 or labels.max() > self.num_classes:
                raise UserError(
                    f"Labels must be a 1-D long tensor of classes in [0, {self.num_classes}], got dtype "
                    f"{labels.dtype}, shape {tuple(labels.shape)}."
                )
        if torch.is_tensor(guidance) or guidance != 1.0:
            if self.num_classes == 0:
                raise UserError(
                    f"Guidance scale {guidance} needs a class-conditional model, but this model is "
                    "unconditional; use guidance 1."
                )
            if labels is None:
                raise UserError(
                    f"Guidance scale {guidance} needs class labels to guide towards; pass labels or use guidance 1."
                )
        if interval is not None and not (len(interval) == 2 and 0 <= interval[0] < interval[1]):
            raise UserError(
                f"A guidance interval is two noise levels (low, high) with 0 <= low < high, got {tuple(interval)}."
            )

    def _scalar_coefficients(self, t: float) -> tuple[float, float]:
        """(alpha, sigma) for one timestep as Python floats, cached: samplers revisit the same grid points
        and a float64 table lookup costs more than the arithmetic it feeds on small batches."""
        coefficients = self._cache.get(t)
        if coefficients is None:
            coefficients = self._cache[t] = self.schedule.alpha_sigma(t)
        return coefficients

    def _guided(self, alpha, sigma) -> bool | torch.Tensor:
        """Whether guidance applies at these coefficients: a bool for a scalar t, else (B, 1, ..., 1)."""
        if self.guidance_input or (not torch.is_tensor(self.guidance) and self.guidance == 1.0):
            return False
        if self.guidance_interval is None:
            return True
        low, high = self.guidance_interval
        level = sigma / alpha  # the VE noise level
        return (level > low) & (level <= high)

    def __call__(self, x_t: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t: (B, C, H, W); t: scalar or (B,) timesteps in [0, T-1] (fractional allowed).
        Returns (x0, eps), both shaped and typed like x_t.

        Classifier-free guidance (Ho & Salimans 2022), for guidance w != 1: the conditional and the
        unconditional (label = num_classes) pass run as ONE batch of 2B, and the outputs combine as
        out_u + w (out_c - out_u) in the network's own parametrisation. At fixed (x_t, t) eps, x0 and
        v are affine in the output with the same coefficients for both passes, and the weights
        (1 - w) + w sum to 1, so this is exactly eps_u + w (eps_c - eps_u).
        """
        batch = x_t.shape[0]
        labels = self.labels
        if labels is not None and labels.shape[0] != batch:
            raise UserError(f"The denoiser holds {labels.shape[0]} labels but was given a batch of {batch}.")
        if self.num_classes and labels is None:
            # A conditional net asked for an unconditional sample: the reserved "no label" class.
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=x_t.device)
        if isinstance(t, (int, float)) or (torch.is_tensor(t) and t.ndim == 0):
            alpha, sigma = self._scalar_coefficients(float(t))
        else:
            alpha, sigma = self.schedule.coefficients(t, x_t)
        t_net = net_time(self.schedule.network_time(t), x_t)
        guided = self._guided(alpha, sigma)
        scale = self.guidance
        if torch.is_tensor(scale):
            scale = scale.to(x_t.device, x_t.dtype).view(-1, *[1] * (x_t.ndim - 1))
        if self.guidance_input:
            w = scale.flatten() if torch.is_tensor(scale) else torch.full((batch,), scale, device=x_t.device)
            out = self.net(x_t, t_net, labels, w)
        elif guided is False:
            out = self.net(x_t, t_net, labels)
        elif self.guide is not None:
            out_c = self.net(x_t, t_net, labels)
            out = self.guide(x_t, t_net, labels)
            out = out + scale * (out_c - out)
            if guided is not True:
                out = torch.where(guided, out, out_c)
        else:
            uncond = torch.full_like(labels, self.num_classes)
            both = self.net(torch.cat([x_t, x_t]), torch.cat([t_net, t_net]), torch.cat([labels, uncond]))
            out_c, out_u = both.chunk(2)
            out = out_u + scale * (out_c - out_u)
            if guided is not True:  # per-sample t straddling the interval: plain conditional outside it
                out = torch.where(guided, out, out_c)
        x0, eps = to_x0_eps(x_t, out, self.prediction, alpha, sigma)
        if self.clip is not None:
            x0 = x0.clamp(*self.clip)
            eps = eps_from_x0(x_t, x0, alpha, sigma)
        return x0, eps
