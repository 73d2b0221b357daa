"""Periodic schedules: when the ticks of a cron expression or an interval fall.

Pure functions of ``now``; the scheduler in :mod:`spoolhouse.worker.scheduler`
turns ticks into jobs, exactly once per tick across every host.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .task import Task

#: How late a tick may be noticed and still run when no earlier tick was ever
#: recorded (a new schedule does not run for a tick from before it existed).
FIRST_TICK_GRACE = 60.0

Missed = Literal["once", "skip"]


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:  # pragma: no cover - depends on installed extras
        raise ConfigurationError(
            "cron schedules need cronsim: pip install 'spoolhouse[cron]'"
        ) from exc
    return cronsim


def parse_tz(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {tz!r}; use an IANA name like 'Europe/Paris'") from exc


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """One periodic task: a cron expression (in ``tz``) or a fixed interval."""

    name: str  # schedule name, unique per spooler (defaults to the task name)
    task: Task[Any, Any]
    cron: str | None = None
    every: float | None = None  # seconds; ticks fall on multiples of it since the epoch
    tz: tzinfo = UTC
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    missed: Missed = "once"  # after downtime: run the latest missed tick once, or skip it

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError("a periodic task takes cron='…' or every=…, exactly one")
        if self.every is not None and (math.isnan(self.every) or self.every < 1):
            raise ConfigurationError("every= must be at least 1 second")
        if self.cron is not None:
            cronsim = _cronsim()
            try:
                cronsim.CronSim(self.cron, datetime.now(self.tz))
            except cronsim.CronSimError as exc:
                raise ConfigurationError(f"bad cron expression {self.cron!r}: {exc}") from exc
        if self.missed not in ("once", "skip"):
            raise ConfigurationError("missed= is 'once' (run the latest missed tick) or 'skip'")

    def latest_tick(self, now: float) -> float:
        """The latest tick at or before ``now``."""
        if self.every is not None:
            return math.floor(now / self.every) * self.every
        assert self.cron is not None
        # reverse iteration yields the latest match strictly before its start
        start = datetime.fromtimestamp(math.floor(now) + 1, self.tz)
        tick: datetime = next(_cronsim().CronSim(self.cron, start, reverse=True))
        return tick.timestamp()

    def next_tick(self, now: float) -> float:
        """The earliest tick after ``now``."""
        if self.every is not None:
            return (math.floor(now / self.every) + 1) * self.every
        assert self.cron is not None
        start = datetime.fromtimestamp(math.floor(now), self.tz)
        tick: datetime = next(_cronsim().CronSim(self.cron, start))
        return tick.timestamp()

    def describe(self) -> str:
        """The schedule in words: ``every 30 seconds``, ``At 09:00 on Monday (Europe/Paris)``."""
        if self.every is not None:
            return f"every {_duration(self.every)}"
        assert self.cron is not None
        text = str(_cronsim().CronSim(self.cron, datetime.now(self.tz)).explain())
        zone = getattr(self.tz, "key", None) or str(self.tz)
        return f"{text} ({zone})"


def interval_seconds(every: float | timedelta) -> float:
    if isinstance(every, timedelta):
        return every.total_seconds()
    if isinstance(every, bool) or not isinstance(every, int | float):
        raise ConfigurationError("every= takes seconds or a timedelta")
    return float(every)


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_rate(rate: str) -> tuple[int, float]:
    """``"100/m"`` → ``(100, 60.0)``; also ``"10/s"``, ``"5/h"``, ``"1000/d"``, ``"3/10s"``."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ConfigurationError(
            f"rate= must look like '100/m' (count per s, m, h or d; or '3/10s'), not {rate!r}"
        )
    count, multiple, unit = match.groups()
    per = _UNIT[unit] * (int(multiple) if multiple else 1)
    if per <= 0:
        raise ConfigurationError(f"rate= period must be positive: {rate!r}")
    return int(count), per


def when(ts: float, tz: tzinfo = UTC) -> str:
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


__all__ = ["Schedule", "parse_rate", "parse_tz", "interval_seconds", "FIRST_TICK_GRACE", "timedelta"]
