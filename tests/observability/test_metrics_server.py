"""serve_metrics: the supervisor listener, the /metrics server and the queue gauges."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from obs_helpers import pick, scrape, total, value

from spoolhouse import FakeClock, Spooler
from spoolhouse.errors import ConfigurationError
from spoolhouse.metrics import DURATION_BUCKETS, MetricsServer, serve_metrics

STATES = ("pending", "running", "succeeded", "failed", "cancelled")


def make_spooler(url: str = "memory://") -> Spooler:
    sp = Spooler(url, clock=FakeClock())

    @sp.task(name="ok")
    def ok(n: int) -> int:
        return n

    @sp.task(name="boom", retries=0)
    def boom() -> None:
        raise ValueError("boom")

    @sp.task(name="flaky", retries=1, backoff=10.0, jitter=0.0)
    def flaky() -> None:
        raise ValueError("again")

    @sp.task(name="mail", queue="emails")
    def mail(to: str) -> None:
        pass

    return sp


class FakeSupervisor(SimpleNamespace):
    """What serve_metrics uses of a Supervisor: ``.spooler`` and ``.listeners``."""

    spooler: Spooler
    listeners: list[Any]


@pytest.fixture
def sp(prom: ModuleType) -> Iterator[Spooler]:
    sp = make_spooler()
    yield sp
    sp.close()


@pytest.fixture
def served(sp: Spooler) -> Iterator[tuple[FakeSupervisor, MetricsServer]]:
    sup = FakeSupervisor(spooler=sp, listeners=[])
    server = serve_metrics(sup, host="127.0.0.1", port=0)
    try:
        yield sup, server
    finally:
        server.close()


def run_like_a_child(sup: FakeSupervisor) -> Any:
    """A worker whose outcomes reach the supervisor's listeners, as a child's do."""

    def on_outcome(job: Any, kind: str, duration: float) -> None:
        for listener in sup.listeners:
            listener(job.task, job.queue, kind, duration)

    return sup.spooler.worker(on_outcome=on_outcome)


def test_serve_metrics_registers_one_listener_and_serves_on_the_bound_port(
    served: tuple[FakeSupervisor, MetricsServer],
) -> None:
    sup, server = served
    assert len(sup.listeners) == 1
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"
    status, text, samples = scrape(server.url)
    assert status == 200
    # nothing ran yet: the counter family is declared, without samples
    assert "# TYPE spoolhouse_jobs_total counter" in text
    assert not pick(samples, "spoolhouse_jobs_total")


def test_listener_calls_become_counters_and_a_histogram(
    served: tuple[FakeSupervisor, MetricsServer],
) -> None:
    sup, server = served
    (listener,) = sup.listeners
    listener("ok", "default", "succeeded", 0.003)
    listener("ok", "default", "succeeded", 0.2)
    listener("ok", "default", "retry", 7.0)
    listener("mail", "emails", "failed", 700.0)
    listener("mail", "emails", "cancelled", 0.0)
    _, _, s = scrape(server.url)
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="succeeded") == 2
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="retry") == 1
    assert value(s, "spoolhouse_jobs_total", task="mail", queue="emails", outcome="failed") == 1
    assert value(s, "spoolhouse_jobs_total", task="mail", queue="emails", outcome="cancelled") == 1
    assert total(s, "spoolhouse_jobs_total") == 5
    hist = "spoolhouse_job_duration_seconds"
    assert value(s, f"{hist}_count", task="ok", queue="default") == 3
    assert value(s, f"{hist}_sum", task="ok", queue="default") == pytest.approx(7.203)
    assert value(s, f"{hist}_bucket", task="ok", queue="default", le="0.005") == 1
    assert value(s, f"{hist}_bucket", task="ok", queue="default", le="0.25") == 2
    assert value(s, f"{hist}_bucket", task="ok", queue="default", le="10.0") == 3
    # 700 s is past the last bucket (10 min): only +Inf counts it
    assert value(s, f"{hist}_bucket", task="mail", queue="emails", le="600.0") == 1
    assert value(s, f"{hist}_bucket", task="mail", queue="emails", le="+Inf") == 2


def test_bucket_layout() -> None:
    assert DURATION_BUCKETS[0] == 0.005
    assert DURATION_BUCKETS[-1] == 600.0
    assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))


def test_outcomes_of_real_jobs(served: tuple[FakeSupervisor, MetricsServer]) -> None:
    sup, server = served
    sp = sup.spooler
    tasks = {name: sp.registry.get(name) for name in ("ok", "boom", "flaky", "mail")}
    for n in range(3):
        tasks["ok"].spool(n)
    tasks["boom"].spool()
    tasks["boom"].spool()
    tasks["flaky"].spool()
    tasks["mail"].spool("a@b.c")
    worker = run_like_a_child(sup)
    assert worker.drain() == 7
    assert isinstance(sp.clock, FakeClock)
    sp.clock.advance(60)  # the flaky job's retry is due
    assert worker.drain() == 1
    _, _, s = scrape(server.url)
    counts = {
        (dict(labels)["task"], dict(labels)["outcome"]): v
        for labels, v in pick(s, "spoolhouse_jobs_total").items()
    }
    assert counts == {
        ("ok", "succeeded"): 3,
        ("boom", "failed"): 2,
        ("flaky", "retry"): 1,
        ("flaky", "failed"): 1,
        ("mail", "succeeded"): 1,
    }
    assert value(s, "spoolhouse_job_duration_seconds_count", task="flaky", queue="default") == 2


def test_queue_gauges_are_read_from_the_store_at_scrape_time(
    served: tuple[FakeSupervisor, MetricsServer],
) -> None:
    sup, server = served
    sp = sup.spooler
    assert isinstance(sp.clock, FakeClock)
    _, _, s = scrape(server.url)
    # every state of every registered queue, zeros included, before any job exists
    for queue in ("default", "emails"):
        for state in STATES:
            assert value(s, "spoolhouse_queue_jobs", queue=queue, state=state) == 0
        assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue=queue) == 0

    ok, mail = sp.registry.get("ok"), sp.registry.get("mail")
    ok.spool(1)
    sp.clock.advance(5)
    ok.spool(2)
    ok.options(delay=3600).spool(3)  # pending, not due
    mail.options(delay=100).spool("x@y.z")
    mail.options(queue="bulk").spool("y@y.z")  # a queue no task names
    sp.clock.advance(30)
    _, _, s = scrape(server.url)
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 3
    assert value(s, "spoolhouse_queue_jobs", queue="emails", state="pending") == 1
    assert value(s, "spoolhouse_queue_jobs", queue="bulk", state="pending") == 1
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="succeeded") == 0
    # the earliest due job of default was spooled 35 s ago; emails' is not due yet
    assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="default") == 35
    assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="emails") == 0
    assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="bulk") == 30

    run_like_a_child(sup).drain()
    _, _, s = scrape(server.url)
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 1
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="succeeded") == 2
    assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="default") == 0


def test_gauges_from_a_sqlite_store(prom: ModuleType, tmp_path: Path) -> None:
    sp = make_spooler(f"sqlite:///{tmp_path}/spool.db")
    sup = FakeSupervisor(spooler=sp, listeners=[])
    server = serve_metrics(sup, host="127.0.0.1", port=0)
    try:
        ok = sp.registry.get("ok")
        for n in range(4):
            ok.spool(n)
        assert isinstance(sp.clock, FakeClock)
        sp.clock.advance(12)
        run_like_a_child(sup).drain(max_jobs=1)
        for _ in range(3):  # the server thread keeps one connection across scrapes
            _, _, s = scrape(server.url)
            assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 3
            assert value(s, "spoolhouse_queue_jobs", queue="default", state="succeeded") == 1
            assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="default") == 12
            assert total(s, "spoolhouse_jobs_total") == 1
    finally:
        server.close()
        sp.close()


def test_a_failing_store_gives_no_gauges_and_no_error(
    served: tuple[FakeSupervisor, MetricsServer], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sup, server = served
    sup.listeners[0]("ok", "default", "succeeded", 0.1)

    def broken() -> dict[str, dict[str, int]]:
        raise OSError("the store is gone")

    monkeypatch.setattr(sup.spooler.backend, "counts", broken)
    status, text, s = scrape(server.url)
    assert status == 200
    assert "spoolhouse_queue" not in text
    assert value(s, "spoolhouse_jobs_total", task="ok", queue="default", outcome="succeeded") == 1
    assert "the store is gone" in caplog.text

    monkeypatch.undo()
    _, _, s = scrape(server.url)
    assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 0


def test_a_listener_never_raises_into_the_supervisor(
    served: tuple[FakeSupervisor, MetricsServer], caplog: pytest.LogCaptureFixture,
) -> None:
    sup, server = served
    sup.listeners[0]("ok", "default", "succeeded", "not a number")
    assert "cannot record metrics" in caplog.text
    _, _, s = scrape(server.url)
    assert total(s, "spoolhouse_job_duration_seconds_count") == 0


def test_two_servers_in_one_process_do_not_share_counters(sp: Spooler) -> None:
    a = FakeSupervisor(spooler=sp, listeners=[])
    b = FakeSupervisor(spooler=make_spooler(), listeners=[])
    server_a = serve_metrics(a, host="127.0.0.1", port=0)
    server_b = serve_metrics(b, host="127.0.0.1", port=0)
    try:
        a.listeners[0]("ok", "default", "succeeded", 0.1)
        _, _, sa = scrape(server_a.url)
        _, _, sb = scrape(server_b.url)
        assert total(sa, "spoolhouse_jobs_total") == 1
        assert total(sb, "spoolhouse_jobs_total") == 0
    finally:
        server_a.close()
        server_b.close()


def test_a_busy_port_is_a_configuration_error(sp: Spooler) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = FakeSupervisor(spooler=sp, listeners=[])
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}"):
            serve_metrics(sup, host="127.0.0.1", port=port)
        assert sup.listeners == []


def test_close_frees_the_port(sp: Spooler) -> None:
    sup = FakeSupervisor(spooler=sp, listeners=[])
    server = serve_metrics(sup, host="127.0.0.1", port=0)
    url = server.url
    server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    sup = FakeSupervisor(spooler=Spooler("memory://"), listeners=[])
    with pytest.raises(ConfigurationError, match=r"spoolhouse\[metrics\]"):
        serve_metrics(sup, host="127.0.0.1", port=0)
    assert sup.listeners == []
