"""A model's sample settings with some replaced, checked like any config: what `Pipeline.settings` returns."""

from __future__ import annotations

from mnist_diffusion.config import ConfigError, RunConfig, SampleConfig, from_dict, to_dict
from mnist_diffusion.diffusion.samplers import check_settings
from mnist_diffusion.errors import UserError


class _ModelDefault:
    """The sentinel for "the model's own setting" where None already means something (guidance_interval=None:
    guide at every step)."""

    def __repr__(self) -> str:
        return "MODEL_DEFAULT"


MODEL_DEFAULT = _ModelDefault()


def resolve_settings(config: RunConfig, name: str, guidance_interval=MODEL_DEFAULT, **given) -> SampleConfig:
    """`config.sample` with the settings in `given` (sampler, steps, guidance, spacing, eta, shift) that are not
    None replaced, and `guidance_interval` unless it is `MODEL_DEFAULT`; checked against the model's noise process.
    An unconditional model's guidance is 1. Anything wrong is one UserError sentence."""
    data = to_dict(config.sample)
    data.update({k: v for k, v in given.items() if v is not None})
    if guidance_interval is not MODEL_DEFAULT:
        data["guidance_interval"] = None if guidance_interval is None else list(guidance_interval)
    if not config.model.num_classes:
        data["guidance"] = given.get("guidance") or 1.0
    try:
        resolved = from_dict(SampleConfig, data, "sample")
        check_settings(resolved, config.diffusion.kind)
    except ConfigError as e:
        raise UserError(f"{e}") from None
    if resolved.guidance_interval is not None and config.model.guidance_input:
        raise UserError(f"{name} has its guidance distilled in, so a guidance interval does not apply; leave it out.")
    return resolved
