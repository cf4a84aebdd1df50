"""What one request to the page's API may ask for, and the checks that refuse the rest with one sentence.

Every bound is checked before any model work starts: the body's size (by `guard.RequestGuard`, before it is
read), each value's type and range, and the work a request asks for, counted in network evaluations of one
digit (digits x the sampler's evaluations for its steps x 2 where guidance doubles the batch x resampling).
The time budget and the queue bound are kept by `work.WorkQueue`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import numpy as np

from mnist_diffusion.config import GUIDANCE_RANGE  # the one range everywhere; the page's slider offers its lower part
from mnist_diffusion.errors import UserError

# The page's seeds: far more than anyone types, and every one of them within what the pipeline takes.
MAX_SEED = 2**40


class Refused(UserError):
    """A request the server will not take, now or at all; `status` is the HTTP status that says which."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """The server's bounds on one request (`create_app(limits=...)`)."""

    body_bytes: int = 64 * 1024  # a request body; the largest the page sends (a completion) is about 2 KB
    n: int = 400  # digits in one grid
    steps: int = 200  # sampler steps
    resample: int = 10  # RePaint resampling of a completion
    # network evaluations of one digit in one request (`check_work`): the page's 400-digit grid at 50 guided
    # steps, while the API's own maxima (400 digits x 200 Heun steps x guidance) are refused
    evaluations: int = 40_000
    seconds: float = 60.0  # model time of one request, checked between sampler steps
    waiting: int = 4  # requests that may wait while one runs; more are answered "busy"


def cut(text: str, limit: int) -> str:
    """`text`, at most `limit` characters: a message never echoes a large body back."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = 40) -> str:
    """repr(value), at most `limit` characters."""
    return cut(repr(value), limit)


def whole(value: Any) -> bool:
    """An int that is not a bool (JSON's true would otherwise count as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_object(raw: bytes) -> dict:
    """The request body as a JSON object, or one sentence."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise UserError("the request must be a JSON object.") from None
    if not isinstance(body, dict):
        raise UserError("the request must be a JSON object.")
    return body


def decode_pixels(text: Any, what: str) -> np.ndarray:
    """base64 of 784 bytes -> a uint8 (28, 28) array."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be base64 of 784 bytes (28 x 28 pixels).") from None
    if len(raw) != 784:
        raise UserError(f"{what} must hold 784 pixels (28 x 28), got {len(raw)}.")
    return np.frombuffer(raw, dtype=np.uint8).reshape(28, 28).copy()  # writable, as torch.from_numpy wants


def settings(num_classes: int, body: dict, limits: Limits) -> dict:
    """The sampling keyword arguments a request asks for, checked: one sentence per bad value."""
    steps = body.get("steps")
    if steps is not None and (not whole(steps) or not 1 <= steps <= limits.steps):
        raise UserError(f"steps must be a whole number from 1 to {limits.steps}, got {shown(steps)}.")
    guidance = body.get("guidance")
    low, high = GUIDANCE_RANGE
    if guidance is not None and (
        isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not low <= guidance <= high
    ):
        raise UserError(f"guidance must be a number from {low:g} to {high:g}, got {shown(guidance)}.")
    seed = body.get("seed", 0)
    if not whole(seed) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"seed must be a whole number from 0 to {MAX_SEED}, got {shown(seed)}.")
    digit = body.get("digit")
    if digit is not None and (not whole(digit) or not 0 <= digit < max(num_classes, 1)):
        raise UserError(
            f"digit must be 0-{num_classes - 1} or empty (any digit), got {shown(digit)}."
            if num_classes
            else "this model is unconditional; leave the digit empty."
        )
    sampler = body.get("sampler") or None
    if sampler is not None and not isinstance(sampler, str):
        raise UserError(f"sampler must be a sampler's name, got {shown(sampler)}.")
    return {
        "steps": steps,
        "guidance": guidance if digit is not None else None,
        "seed": seed,
        "sampler": sampler,
        "labels": None if digit is None else [digit],
    }


def count(body: dict, key: str, default: int, high: int) -> int:
    """A whole number from 1 to `high` (`default` when left out)."""
    value = body.get(key, default)
    if not whole(value) or not 1 <= value <= high:
        raise UserError(f"{key} must be a whole number from 1 to {high}, got {shown(value)}.")
    return value


def check_work(digits: int, per_digit: int, limits: Limits) -> None:
    """Refuse a request of `digits` x `per_digit` network evaluations past `limits.evaluations`."""
    work = digits * per_digit
    if work > limits.evaluations:
        raise UserError(
            f"this request asks for {work:,} network evaluations ({digits} digits x {per_digit:,} each, "
            f"for its steps, guidance and resampling); the server takes at most {limits.evaluations:,}: "
            "ask for fewer digits or steps."
        )
