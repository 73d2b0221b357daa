"""Turning ``at=`` and ``delay=`` into a stored ``run_at`` (Unix seconds, UTC).

Pure functions of their inputs and ``now``; no clock reads.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

#: Longest delay accepted: beyond it a value is almost surely a unit mistake (ms for s).
MAX_DELAY = 100 * 365.25 * 86400.0


def delay_seconds(delay: float | timedelta) -> float:
    """Validate a delay and return it in seconds."""
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        raise TypeError(
            f"delay= takes seconds (int or float) or a timedelta, not {type(delay).__name__}"
        )
    else:
        seconds = float(delay)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError("delay= must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(
            f"delay= must be >= 0, got {seconds}; to run now, leave delay out"
        )
    if seconds > MAX_DELAY:
        raise ValueError(
            f"delay= of {seconds:.0f}s is over 100 years; did you pass milliseconds?"
        )
    return seconds


def at_timestamp(at: datetime) -> float:
    """Validate an ``at=`` datetime and return its Unix time. Naive datetimes are refused."""
    if not isinstance(at, datetime):
        raise TypeError(
            f"at= takes a timezone-aware datetime, not {type(at).__name__}; "
            "for a Unix timestamp use datetime.fromtimestamp(ts, timezone.utc)"
        )
    if at.tzinfo is None or at.tzinfo.utcoffset(at) is None:
        raise ValueError(
            "at= needs a timezone-aware datetime so that every host reads it the same way; "
            "use e.g. datetime.now(timezone.utc) + timedelta(minutes=5) "
            "or at.replace(tzinfo=ZoneInfo('Europe/Paris'))"
        )
    try:
        ts = at.timestamp()
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"at= {at!r} is out of the supported range") from exc
    if ts < 0:
        raise ValueError(f"at= {at.isoformat()} is before 1970; pass a real time")
    return ts


def resolve_run_at(now: float, *, at: datetime | None, delay: float | timedelta | None) -> float:
    """When a job becomes due: ``now`` by default, ``at`` (past ``at`` means now), or ``now + delay``."""
    if at is not None and delay is not None:
        raise TypeError("pass at= or delay=, not both")
    if at is not None:
        ts = at_timestamp(at)
        if ts - now > MAX_DELAY:
            raise ValueError(f"at= {at.isoformat()} is more than 100 years ahead")
        return max(ts, now)
    if delay is not None:
        return now + delay_seconds(delay)
    return now
