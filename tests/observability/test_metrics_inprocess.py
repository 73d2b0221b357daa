"""metrics_wsgi_app (for the dashboard) and instrument_worker (a Worker run in-process)."""

from __future__ import annotations

import gzip
import sys
import wsgiref.util
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from obs_helpers import Samples, parse_metrics, pick, total, value

from spoolhouse import FakeClock, Spooler
from spoolhouse.errors import ConfigurationError
from spoolhouse.job import Job
from spoolhouse.metrics import (
    BackendCollector,
    instrument_worker,
    job_metrics,
    metrics_wsgi_app,
)


@pytest.fixture
def sp(prom: ModuleType) -> Iterator[Spooler]:
    sp = Spooler("memory://", clock=FakeClock())

    @sp.task(name="ok")
    def ok(n: int) -> int:
        return n

    @sp.task(name="boom", retries=0, queue="risky")
    def boom() -> None:
        raise ValueError("boom")

    yield sp
    sp.close()


def call_wsgi(app: Any, path: str = "/metrics", **environ: str) -> tuple[str, dict[str, str], bytes]:
    env: dict[str, Any] = {"PATH_INFO": path, **environ}
    wsgiref.util.setup_testing_defaults(env)
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"] = status
        started["headers"] = dict(headers)

    body = b"".join(app(env, start_response))
    return started["status"], started["headers"], body


def wsgi_samples(app: Any) -> Samples:
    status, headers, body = call_wsgi(app)
    assert status == "200 OK"
    assert headers["Content-Type"].startswith("text/plain")
    return parse_metrics(body.decode())


def test_wsgi_app_serves_the_queue_gauges(sp: Spooler) -> None:
    sp.registry.get("ok").spool(1)
    sp.registry.get("ok").spool(2)
    s = wsgi_samples(metrics_wsgi_app(sp))
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 2
    assert value(s, "spoolhouse_queue_jobs", queue="risky", state="pending") == 0
    assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="default") == 0
    assert not pick(s, "spoolhouse_jobs_total")


def test_wsgi_app_with_a_registry_serves_its_counters_once(
    sp: Spooler, prom: ModuleType
) -> None:
    registry = prom.CollectorRegistry()
    # a registry that already holds queue gauges must not make them appear twice
    registry.register(BackendCollector(sp))
    worker = sp.worker()
    instrument_worker(worker, registry)
    sp.registry.get("ok").spool(1)
    sp.registry.get("boom").spool()
    assert worker.drain() == 2
    s = wsgi_samples(metrics_wsgi_app(sp, registry))  # parse_metrics rejects duplicates
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="succeeded") == 1
    assert value(s, "spoolhouse_jobs_total", task="boom", queue="risky", outcome="failed") == 1
    assert value(s, "spoolhouse_queue_jobs", queue="risky", state="failed") == 1


def test_wsgi_app_gzip_and_name_filter(sp: Spooler, prom: ModuleType) -> None:
    registry = prom.CollectorRegistry()
    instrument_worker(sp.worker(), registry).observe("ok", "default", "succeeded", 0.1)
    app = metrics_wsgi_app(sp, registry)
    status, headers, body = call_wsgi(app, HTTP_ACCEPT_ENCODING="gzip")
    assert headers.get("Content-Encoding") == "gzip"
    assert "spoolhouse_queue_jobs" in gzip.decompress(body).decode()
    status, _, body = call_wsgi(app, QUERY_STRING="name[]=spoolhouse_queue_jobs")
    assert status == "200 OK"
    text = body.decode()
    assert "spoolhouse_queue_jobs{" in text and "spoolhouse_jobs_total" not in text


def test_wsgi_app_survives_a_failing_store(sp: Spooler, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no store")

    sp.registry.get("ok").spool(1)
    monkeypatch.setattr(sp.backend, "next_due", broken)
    status, _, body = call_wsgi(metrics_wsgi_app(sp))
    assert status == "200 OK"
    assert b"spoolhouse_queue" not in body


def test_mounted_in_a_flask_view(sp: Spooler) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    metrics_app = metrics_wsgi_app(sp)

    @app.get("/spool/metrics")
    def metrics() -> Any:
        return flask.Response.from_app(metrics_app, flask.request.environ)

    sp.registry.get("ok").spool(1)
    response = app.test_client().get("/spool/metrics")
    assert response.status_code == 200
    s = parse_metrics(response.get_data(as_text=True))
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 1


def test_instrument_worker_counts_and_keeps_the_previous_hook(
    sp: Spooler, prom: ModuleType
) -> None:
    seen: list[tuple[str, str]] = []

    def previous(job: Job, kind: str, duration: float) -> None:
        seen.append((job.task, kind))

    registry = prom.CollectorRegistry()
    worker = sp.worker(on_outcome=previous)
    metrics = instrument_worker(worker, registry)
    assert instrument_worker(worker, registry) is metrics  # idempotent
    sp.registry.get("ok").spool(1)
    sp.registry.get("boom").spool()
    worker.drain()
    assert sorted(seen) == [("boom", "failed"), ("ok", "succeeded")]  # once each
    s = parse_metrics(prom.generate_latest(registry).decode())
    assert total(s, "spoolhouse_jobs_total") == 2
    assert value(s, "spoolhouse_job_duration_seconds_count", task="ok", queue="default") == 1


def test_workers_sharing_a_registry_share_counters(sp: Spooler, prom: ModuleType) -> None:
    registry = prom.CollectorRegistry()
    first, second = sp.worker(), sp.worker()
    assert instrument_worker(first, registry) is instrument_worker(second, registry)
    assert job_metrics(registry) is job_metrics(registry)
    for n in range(4):
        sp.registry.get("ok").spool(n)
    assert first.drain(max_jobs=1) == 1
    assert second.drain() == 3
    s = parse_metrics(prom.generate_latest(registry).decode())
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="succeeded") == 4


def test_one_worker_into_two_registries(sp: Spooler, prom: ModuleType) -> None:
    a, b = prom.CollectorRegistry(), prom.CollectorRegistry()
    worker = sp.worker()
    instrument_worker(worker, a)
    instrument_worker(worker, b)
    instrument_worker(worker, a)
    sp.registry.get("ok").spool(1)
    worker.drain()
    for registry in (a, b):
        s = parse_metrics(prom.generate_latest(registry).decode())
        assert total(s, "spoolhouse_jobs_total") == 1


def test_missing_prometheus_client_names_the_extra(
    sp: Spooler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'spoolhouse\[metrics\]'"):
        metrics_wsgi_app(sp)


def test_the_signals_recipe_of_the_docs_counts_drain(sp: Spooler, prom: ModuleType) -> None:
    from spoolhouse import signals

    registry = prom.CollectorRegistry()
    metrics = job_metrics(registry)

    def counter(outcome: str) -> Any:
        def receive(spooler: Spooler, job: Job, duration: float, **extra: Any) -> None:
            metrics.observe(job.task, job.queue, outcome, duration)
        return receive

    receivers = {outcome: counter(outcome) for outcome in signals.BY_OUTCOME}
    for outcome, signal in signals.BY_OUTCOME.items():
        signal.connect(receivers[outcome], sender=sp, weak=False)
    try:
        sp.registry.get("ok").spool(1)
        sp.registry.get("boom").spool()
        assert sp.drain() == 2
    finally:
        for outcome, signal in signals.BY_OUTCOME.items():
            signal.disconnect(receivers[outcome], sender=sp)
    s = parse_metrics(prom.generate_latest(registry).decode())
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="succeeded") == 1
    assert value(s, "spoolhouse_jobs_total", task="boom", queue="risky", outcome="failed") == 1
