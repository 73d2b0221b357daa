"""Fixtures of the reliability suite: one scenario (files + processes) per test."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE / "apps"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from harness import FIGURES, Scenario, scenario  # noqa: E402


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    """A database, a ledger and a control directory; every started process is killed after."""
    with scenario(tmp_path) as s:
        yield s


@pytest.fixture
def bounded(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test when it runs longer than its module's ``TEST_BOUND`` seconds."""
    bound = int(request.module.TEST_BOUND)

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"test ran longer than {bound} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(bound)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in FIGURES:
        text = " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )
        terminalreporter.write_line(f"{name}: {text}")
