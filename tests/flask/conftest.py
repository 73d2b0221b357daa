"""Fixtures for the Flask integration, the thread pool and the uWSGI layer."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask

from spoolhouse import FakeClock, Spooler

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def restore_spoolhouse_logger() -> Iterator[None]:
    """The worker command configures the ``spoolhouse`` logger; undo it after each test."""
    logger = logging.getLogger("spoolhouse")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    """``make_app(spooler, **config)``: a Flask app with its instance folder under tmp_path."""
    counter = [0]

    def make(spooler: Spooler | None = None, /, **config: Any) -> Flask:
        counter[0] += 1
        app = Flask(f"test_app_{counter[0]}", instance_path=str(tmp_path / f"instance{counter[0]}"))
        app.config.update(config)
        if spooler is not None:
            spooler.init_app(app)
        return app

    return make


def import_example(directory: Path, *names: str) -> dict[str, ModuleType]:
    """Import example modules (``app``, ``tasks``…) by their plain names, then hide them.

    The examples use generic module names; each is imported once per session
    and removed from ``sys.modules`` so that another example can use the names.
    """
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    sys.path.insert(0, str(directory))
    try:
        modules = {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(directory))
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
    return modules


@pytest.fixture(scope="session")
def flask_example() -> dict[str, ModuleType]:
    """``examples/flask_app``: its ``app`` and ``tasks`` modules."""
    return import_example(EXAMPLES / "flask_app", "tasks", "app")


@pytest.fixture(scope="session")
def seed_example() -> Iterator[dict[str, ModuleType]]:
    """``examples/seed_uwsgi`` on the uWSGI layer's module-level spooler, in memory."""
    from spoolhouse.contrib import uwsgi

    before = uwsgi.spooler.url
    uwsgi.configure("memory://")
    try:
        yield import_example(EXAMPLES / "seed_uwsgi", "tasks", "app")
    finally:
        uwsgi.configure(before)
