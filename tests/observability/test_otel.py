"""spoolhouse.otel: PRODUCER span at spool time, CONSUMER span per attempt, via job headers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from spoolhouse import FakeClock, Retry, Spooler, current_job
from spoolhouse.errors import ConfigurationError
from spoolhouse.otel import instrument, instrumentation, uninstrument


@pytest.fixture
def exporter(span_exporter: tuple[Any, Any]) -> Any:
    return span_exporter[0]


@pytest.fixture
def provider(span_exporter: tuple[Any, Any]) -> Any:
    return span_exporter[1]


@pytest.fixture
def seen() -> dict[str, Any]:
    """What the ``ok`` task saw while it ran: its span, baggage and headers."""
    return {}


@pytest.fixture
def sp(provider: Any, seen: dict[str, Any]) -> Iterator[Spooler]:
    sp = Spooler("memory://", clock=FakeClock())

    @sp.task(name="ok", queue="emails")
    def ok(n: int) -> int:
        from opentelemetry import baggage, trace

        seen["span"] = trace.get_current_span().get_span_context()
        seen["baggage"] = baggage.get_baggage("tenant")
        seen["headers"] = current_job().headers
        return n

    @sp.task(name="boom", retries=1, backoff=5.0, jitter=0.0)
    def boom() -> None:
        raise ValueError("it broke")

    @sp.task(name="again", retries=2)
    def again() -> None:
        raise Retry(1.0, reason="not yet")

    yield sp
    sp.close()


def spans(exporter: Any, name: str | None = None) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if name is None or s.name == name]


def test_producer_and_consumer_spans_share_the_trace(
    sp: Spooler, provider: Any, exporter: Any, seen: dict[str, Any]
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    instrument(sp, tracer_provider=provider)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("POST /signup") as request:
        handle = sp.registry.get("ok").spool(41)
    request_ctx = request.get_span_context()
    (send,) = spans(exporter, "ok send")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request_ctx.span_id
    assert send.context.trace_id == request_ctx.trace_id
    assert dict(send.attributes) == {
        "messaging.system": "spoolhouse",
        "messaging.destination.name": "emails",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "spoolhouse.task": "ok",
    }
    job = sp.backend.get(handle.id)
    assert job is not None and job.headers is not None and "traceparent" in job.headers

    assert sp.drain() == 1
    (process,) = spans(exporter, "ok process")
    assert process.kind is SpanKind.CONSUMER
    # a child of the producer span, in the request's trace, and linked to it as well
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == request_ctx.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.status.status_code is StatusCode.UNSET
    assert dict(process.attributes) == {
        "messaging.system": "spoolhouse",
        "messaging.destination.name": "emails",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": handle.id,
        "spoolhouse.task": "ok",
        "spoolhouse.attempt": 1,
    }
    # the task ran inside the consumer span
    assert seen["span"].span_id == process.context.span_id
    assert "traceparent" in seen["headers"]
    assert handle.result(timeout=0) == 41


def test_a_raising_task_records_the_error_and_still_retries(
    sp: Spooler, provider: Any, exporter: Any
) -> None:
    from opentelemetry.trace import StatusCode

    instrument(sp, tracer_provider=provider)
    handle = sp.registry.get("boom").spool()
    assert sp.drain() == 1
    assert handle.status() == "retrying"  # the exception reached the worker
    assert isinstance(sp.clock, FakeClock)
    sp.clock.advance(60)
    assert sp.drain() == 1
    assert handle.status() == "failed"
    (send,) = spans(exporter, "boom send")
    attempts = spans(exporter, "boom process")
    assert [s.attributes["spoolhouse.attempt"] for s in attempts] == [1, 2]
    for span in attempts:
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: it broke"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "it broke"
        # every attempt hangs off the same producer span
        assert span.parent is not None and span.parent.span_id == send.context.span_id


def test_retry_requests_are_recorded_too(sp: Spooler, provider: Any, exporter: Any) -> None:
    from opentelemetry.trace import StatusCode

    instrument(sp, tracer_provider=provider)
    handle = sp.registry.get("again").spool()
    sp.drain()
    assert handle.status() == "retrying"
    (span,) = spans(exporter, "again process")
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.type"] == "spoolhouse.errors.Retry"


def test_instrument_is_idempotent(sp: Spooler, provider: Any, exporter: Any) -> None:
    first = instrument(sp, tracer_provider=provider)
    assert instrument(sp, tracer_provider=provider) is first
    assert instrument(sp) is first
    assert instrumentation(sp) is first
    assert len(sp.spool_hooks) == 1 and len(sp.middleware) == 1
    sp.registry.get("ok").spool(1)
    sp.drain()
    assert len(spans(exporter, "ok send")) == 1
    assert len(spans(exporter, "ok process")) == 1


def test_uninstrument(sp: Spooler, provider: Any, exporter: Any, seen: dict[str, Any]) -> None:
    def other_hook(task: str, queue: str) -> dict[str, str]:
        return {"x-tenant": "t1"}

    sp.add_spool_hook(other_hook)
    instrument(sp, tracer_provider=provider)
    assert uninstrument(sp) is True
    assert uninstrument(sp) is False
    assert sp.spool_hooks == [other_hook] and sp.middleware == []
    sp.registry.get("ok").spool(1)
    sp.drain()
    assert spans(exporter) == []
    assert seen["headers"] == {"x-tenant": "t1"}


def test_link_mode_starts_a_new_trace(sp: Spooler, provider: Any, exporter: Any) -> None:
    instrument(sp, tracer_provider=provider, parent="link")
    sp.registry.get("ok").spool(1)
    sp.drain()
    (send,) = spans(exporter, "ok send")
    (process,) = spans(exporter, "ok process")
    assert process.parent is None
    assert process.context.trace_id != send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]


def test_a_job_without_trace_headers_gets_a_root_span(
    sp: Spooler, provider: Any, exporter: Any
) -> None:
    sp.registry.get("ok").spool(1)  # spooled before instrumenting: no headers
    instrument(sp, tracer_provider=provider)
    sp.drain()
    (process,) = spans(exporter, "ok process")
    assert process.parent is None and list(process.links) == []
    assert spans(exporter, "ok send") == []


def test_baggage_travels_with_the_job(sp: Spooler, provider: Any, seen: dict[str, Any]) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    instrument(sp, tracer_provider=provider)
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        sp.registry.get("ok").spool(1)
    finally:
        otel_context.detach(token)
    sp.drain()
    assert seen["baggage"] == "acme"


def test_inline_mode_nests_the_consumer_span(provider: Any, exporter: Any) -> None:
    sp = Spooler("inline://")

    @sp.task(name="inline_task")
    def inline_task() -> int:
        return 1

    instrument(sp, tracer_provider=provider)
    with provider.get_tracer("tests").start_as_current_span("request"):
        inline_task.spool()
    (send,) = spans(exporter, "inline_task send")
    (process,) = spans(exporter, "inline_task process")
    assert process.parent is not None and process.parent.span_id == send.context.span_id


def test_a_broken_propagator_never_stops_spooling(
    sp: Spooler, provider: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.propagators.textmap import TextMapPropagator

    class Broken(TextMapPropagator):
        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            raise RuntimeError("cannot inject")

        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            from opentelemetry import context as otel_context

            return otel_context.Context()

        @property
        def fields(self) -> set[str]:
            return set()

    instrument(sp, tracer_provider=provider, propagator=Broken())
    handle = sp.registry.get("ok").spool(5)
    assert "cannot record the trace context" in caplog.text
    job = sp.backend.get(handle.id)
    assert job is not None and job.headers is None
    sp.drain()
    assert handle.result(timeout=0) == 5


def test_bad_parent_option(sp: Spooler) -> None:
    with pytest.raises(ConfigurationError, match="parent="):
        instrument(sp, parent="sibling")  # type: ignore[arg-type]
    assert instrumentation(sp) is None


def test_missing_opentelemetry_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    sp = Spooler("memory://")
    with pytest.raises(ConfigurationError, match=r"pip install 'spoolhouse\[otel\]'"):
        instrument(sp)
    assert sp.spool_hooks == []


def test_spool_many_gives_each_job_its_own_producer_span(
    sp: Spooler, provider: Any, exporter: Any
) -> None:
    instrument(sp, tracer_provider=provider)
    sp.registry.get("ok").spool_many([(1,), (2,), (3,)])
    assert sp.drain() == 3
    sends = {s.context.span_id for s in spans(exporter, "ok send")}
    parents = {s.parent.span_id for s in spans(exporter, "ok process") if s.parent}
    assert len(sends) == 3 and parents == sends
