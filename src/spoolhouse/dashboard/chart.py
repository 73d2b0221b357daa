"""The throughput chart's geometry: per-minute outcomes as stacked bars.

Pure: takes the backend's ``stats`` rows and ``now``, returns numbers that the
``_chart.html`` template draws as inline SVG (no JavaScript, no library).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MINUTES = 60


@dataclass(frozen=True, kw_only=True, slots=True)
class Segment:
    """One coloured part of a bar."""

    kind: str  # succeeded, failed or retried: the CSS class
    y: float
    height: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Bar:
    """One minute."""

    x: float
    width: float
    segments: tuple[Segment, ...]
    title: str  # tooltip: the minute and its counts


@dataclass(frozen=True, kw_only=True, slots=True)
class Chart:
    """Everything the template needs, in SVG user units."""

    width: int
    height: int
    left: int  # plot area
    top: int
    plot_width: int
    plot_height: int
    bars: tuple[Bar, ...]
    rate: tuple[tuple[float, float], ...]  # failure rate points (0-100 %, right axis)
    y_ticks: tuple[tuple[float, str], ...]  # (y, label) of the count axis
    x_ticks: tuple[tuple[float, str], ...]  # (x, label) of the time axis
    succeeded: int  # totals over the window
    failed: int
    retried: int

    @property
    def failure_rate(self) -> float | None:
        """Failed / (succeeded + failed) over the window, or ``None`` with no outcome."""
        done = self.succeeded + self.failed
        return None if done == 0 else self.failed / done

    @property
    def rate_polyline(self) -> str:
        """The failure-rate points as an SVG ``points`` attribute."""
        return " ".join(f"{x},{y}" for x, y in self.rate)

    @property
    def empty(self) -> bool:
        return not (self.succeeded or self.failed or self.retried)


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50… that is >= ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - unreachable


def throughput_chart(
    stats: Sequence[tuple[float, int, int, int]],
    *,
    now: float,
    minutes: int = MINUTES,
    width: int = 720,
    height: int = 200,
) -> Chart:
    """Lay out the last ``minutes`` minutes (the current one included) of ``stats``."""
    left, right, top, bottom = 40, 40, 10, 24
    plot_width, plot_height = width - left - right, height - top - bottom
    last = math.floor(now / 60)
    first = last - minutes + 1
    per_minute: dict[int, tuple[int, int, int]] = {}
    for minute_start, ok, failed, retried in stats:
        minute = math.floor(minute_start / 60)
        if first <= minute <= last:
            a, b, c = per_minute.get(minute, (0, 0, 0))
            per_minute[minute] = (a + ok, b + failed, c + retried)
    peak = max((sum(v) for v in per_minute.values()), default=0)
    y_max = nice_ceiling(peak)
    slot = plot_width / minutes
    bar_width = max(1.0, slot * 0.8)

    def y_of(count: float) -> float:
        return top + plot_height - plot_height * count / y_max

    bars: list[Bar] = []
    rate: list[tuple[float, float]] = []
    for index in range(minutes):
        minute = first + index
        ok, failed, retried = per_minute.get(minute, (0, 0, 0))
        x = left + index * slot + (slot - bar_width) / 2
        segments: list[Segment] = []
        base = 0
        for kind, count in (("succeeded", ok), ("failed", failed), ("retried", retried)):
            if count:
                segments.append(Segment(kind=kind, y=round(y_of(base + count), 2),
                                        height=round(plot_height * count / y_max, 2)))
                base += count
        if segments:
            stamp = datetime.fromtimestamp(minute * 60, UTC).strftime("%H:%M")
            bars.append(Bar(
                x=round(x, 2), width=round(bar_width, 2), segments=tuple(segments),
                title=f"{stamp} UTC: {ok} succeeded, {failed} failed, {retried} retried",
            ))
        if ok + failed:
            share = failed / (ok + failed)
            rate.append((round(x + bar_width / 2, 2), round(top + plot_height * (1 - share), 2)))
    y_ticks = tuple((round(y_of(v), 2), str(v)) for v in (0, y_max // 2, y_max) if v or y_max)
    x_ticks = tuple(
        (round(left + (minutes - ago) * slot, 2), "now" if ago == 0 else f"-{ago}m")
        for ago in range(minutes, -1, -15)
    )
    totals = [sum(v[i] for v in per_minute.values()) for i in range(3)]
    return Chart(
        width=width, height=height, left=left, top=top, plot_width=plot_width,
        plot_height=plot_height, bars=tuple(bars), rate=tuple(rate),
        y_ticks=tuple(dict.fromkeys(y_ticks)), x_ticks=x_ticks,
        succeeded=totals[0], failed=totals[1], retried=totals[2],
    )
