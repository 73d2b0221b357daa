"""Retry policy: how many attempts, how long between them, which errors retry."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with a cap and jitter.

    The delay before retry ``n`` (1-based) is ``base * factor ** (n - 1)``,
    capped at ``cap`` and multiplied by a random factor in ``1 ± jitter``.
    """

    retries: int = 3  # retries after the first attempt; max attempts = retries + 1
    base: float = 1.0  # seconds before the first retry
    factor: float = 2.0  # growth per retry
    cap: float = 3600.0  # longest wait between attempts, before jitter
    jitter: float = 0.2  # +-20 % spread so retries of many jobs do not stampede
    retry_on: tuple[type[BaseException], ...] = (Exception,)  # errors that retry; others fail at once

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        for name in ("base", "factor", "cap"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        exponent = max(retry_number - 1, 0)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.cap
        raw = min(raw, self.cap)
        if self.jitter:
            raw *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(raw, 0.0)

    def retries_on(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on)
