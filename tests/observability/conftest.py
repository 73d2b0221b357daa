"""Fixtures of the observability tests: metrics extra, in-memory span export, free ports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from obs_helpers import require  # noqa: E402


@pytest.fixture
def prom() -> ModuleType:
    return require("prometheus_client", "metrics")


@pytest.fixture
def span_exporter() -> Iterator[Any]:
    """An in-memory exporter and its SDK tracer provider: ``(exporter, provider)``."""
    require("opentelemetry.trace", "otel")
    sdk_trace = require("opentelemetry.sdk.trace", "otel")
    export = require("opentelemetry.sdk.trace.export", "otel")
    memory = require("opentelemetry.sdk.trace.export.in_memory_span_exporter", "otel")
    exporter = memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    try:
        yield exporter, provider
    finally:
        provider.shutdown()


@pytest.fixture
def free_port() -> Callable[[], int]:
    import socket

    def pick_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    return pick_port
