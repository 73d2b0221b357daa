"""Where Spoolhouse reads the time.

Only this module and the top of each loop read the clock; everything that
decides "is it due / expired / how long until" takes ``now`` as a parameter.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall time (Unix seconds, UTC) and monotonic time."""

    def now(self) -> float:
        """Wall-clock time in Unix seconds."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for deadlines and intervals."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to. Thread-safe.

    >>> clock = FakeClock(1_700_000_000.0)
    >>> clock.advance(30)
    >>> clock.now()
    1700000030.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = float(start)
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("advance() moves forward; use jump() to set the wall clock back")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def jump(self, seconds: float) -> None:
        """Move only the wall clock (a clock step, as NTP or an operator may cause)."""
        with self._lock:
            self._wall += seconds


SYSTEM_CLOCK = SystemClock()
