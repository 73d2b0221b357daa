"""Test support: a fake clock, a memory spooler, inline mode, and pytest fixtures.

Use in a test suite with ``pytest_plugins = ["spoolhouse.testing"]`` or import
what you need::

    from spoolhouse.testing import FakeClock, memory_spooler

    def test_welcome_email_is_sent_once():
        spooler, clock = memory_spooler()
        ...
        clock.advance(60)
        assert spooler.drain() == 1
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .clock import FakeClock
from .spooler import Spooler

__all__ = ["FakeClock", "memory_spooler", "fake_clock", "spooler"]


def memory_spooler(start: float = 1_700_000_000.0) -> tuple[Spooler, FakeClock]:
    """A spooler on the memory backend driven by a fake clock."""
    clock = FakeClock(start)
    return Spooler("memory://", clock=clock), clock


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`FakeClock` at a fixed start time."""
    return FakeClock()


@pytest.fixture
def spooler(fake_clock: FakeClock) -> Iterator[Spooler]:
    """A fresh memory spooler using ``fake_clock``; register tasks on it in the test."""
    s = Spooler("memory://", clock=fake_clock)
    yield s
    s.close()
