"""Fixtures for the dashboard: a spooler with tasks, apps mounting the blueprint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dashboard_helpers import PREFIX, Tasks, full, make_tasks
from flask import Flask
from flask.testing import FlaskClient

from spoolhouse import FakeClock, Spooler


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def tasks(clock: FakeClock) -> Tasks:
    return make_tasks(Spooler("memory://", clock=clock), clock)


@pytest.fixture
def spooler(tasks: Tasks) -> Spooler:
    return tasks.spooler


@pytest.fixture
def make_client(spooler: Spooler) -> Callable[..., FlaskClient]:
    """``make_client(**blueprint_options)``: a test client of an app mounting the dashboard at /spool."""

    def make(*, secret: str | None = "test-secret", **options: Any) -> FlaskClient:
        app = Flask("dashboard_test_app")
        if secret is not None:
            app.config["SECRET_KEY"] = secret
        app.register_blueprint(spooler.dashboard_blueprint(**options), url_prefix=PREFIX)
        return app.test_client()

    return make


@pytest.fixture
def client(make_client: Callable[..., FlaskClient]) -> FlaskClient:
    """Full access."""
    return make_client(access=full)
