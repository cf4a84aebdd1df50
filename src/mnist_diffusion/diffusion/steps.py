"""The step callback every sampler shares.

The callback contract, one for every sampler (k-diffusion style; new keys never break old callbacks): at each
grid point, after the denoiser, `callback(step)` gets a dict
    i        index of the grid point, 0 .. steps-1        t      its timestep (the tutorial: the noise amount)
    steps    the grid's length                            x_t    the current sample (VP scaling), (B, C, H, W)
    x0, denoised   the denoiser's estimate of the clean sample (the same tensor under both names)
and may return a tensor shaped like x_t to replace it: the step is then taken from the returned x_t with the
same x0 estimate (what inpainting and other guided edits need). Return None to change nothing. A returned
tensor must be floating point, on x_t's device and finite: anything else stops sampling with one sentence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mnist_diffusion.errors import UserError

Callback = Callable[[dict], "torch.Tensor | None"]


def chain(*callbacks: Callback | None) -> Callback | None:
    """Callbacks run in turn at each step, each seeing the x_t the one before it returned; None if all are None."""
    active = [c for c in callbacks if c is not None]
    if len(active) <= 1:
        return active[0] if active else None

    def callback(step: dict) -> torch.Tensor | None:
        x_t = step["x_t"]
        for c in active:
            out = c({**step, "x_t": x_t})
            x_t = x_t if out is None else out
        return x_t

    return callback


def visit(callback: Callback | None, i: int, t: float, steps: int, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Hand grid point i to `callback`; returns x_t, or the replacement the callback returned: a floating-point
    tensor shaped like x_t, on its device and finite everywhere (else one sentence, not a sample of NaNs)."""
    if callback is None:
        return x
    out = callback({"i": i, "t": t, "steps": steps, "x_t": x, "x0": x0, "denoised": x0})
    if out is None:
        return x
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise UserError(
            f"A sampling callback returned {type(out).__name__} "
            f"{tuple(getattr(out, 'shape', ()))}; return None or a tensor shaped like x_t {tuple(x.shape)}."
        )
    if not out.dtype.is_floating_point:
        raise UserError(f"A sampling callback returned a {out.dtype} tensor; return None or floating-point x_t.")
    if out.device != x.device:
        raise UserError(f"A sampling callback returned a tensor on {out.device}; return x_t on {x.device}.")
    if not bool(torch.isfinite(out).all()):
        raise UserError(
            f"A sampling callback returned NaN or infinite values at step {i}; return finite values or None."
        )
    return out.to(x)
