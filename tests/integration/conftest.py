"""Fixtures of the reliability suite: one scenario (files + processes) per test."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, figures in FIGURES:
        text = " ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
        )
        terminalreporter.write_line(f"{name}: {text}")
