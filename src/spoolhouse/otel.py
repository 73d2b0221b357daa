"""OpenTelemetry tracing of jobs, from ``.spool()`` to the worker that runs them.

Needs the ``otel`` extra (``pip install 'spoolhouse[otel]'``, which installs
``opentelemetry-api``); configure an SDK (``opentelemetry-sdk``) and an
exporter as usual. :func:`instrument` adds

* a spool hook: ``.spool()`` starts a PRODUCER span ``"{task} send"`` (a child
  of whatever span is current, e.g. the web request), injects the trace
  context into the job's headers with the global propagator (W3C
  ``traceparent``/``tracestate`` and baggage by default), and ends the span
  right away: it covers building the job, not storing it;
* a middleware: each attempt runs inside a CONSUMER span ``"{task} process"``
  that is a **child of the producer span** (so a job appears in the trace of
  the request that spooled it) and also carries a link to it. Pass
  ``parent="link"`` to start a new trace per attempt that only links to the
  producer (for long-delayed or periodic jobs, where one trace per request
  would span days). An exception raised by the task is recorded on the span,
  the status set to ERROR, and the exception re-raised unchanged; that
  includes :class:`~spoolhouse.Retry` and :class:`~spoolhouse.Abort`.

Attributes: ``messaging.system="spoolhouse"``, ``messaging.destination.name``
(the queue), ``messaging.operation.type`` (``send``/``process``),
``spoolhouse.task``; the consumer span adds ``messaging.message.id`` (the job
id) and ``spoolhouse.attempt``.

Call :func:`instrument` where the spooler is defined, so that it runs in the
producer and in every worker process (which import that module again).

Example::

    spooler = Spooler("sqlite:///spool.db")
    spoolhouse.otel.instrument(spooler)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Tracer, TracerProvider

    from .context import RunningJob
    from .spooler import Spooler

__all__ = ["Instrumentation", "instrument", "instrumentation", "uninstrument"]

log = logging.getLogger("spoolhouse.otel")

#: ``messaging.system`` of every span.
SYSTEM = "spoolhouse"

Parent = Literal["child", "link"]

_lock = threading.Lock()


def _require() -> None:
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "OpenTelemetry tracing needs the opentelemetry-api package: "
            "pip install 'spoolhouse[otel]'"
        ) from exc


class Instrumentation:
    """The spool hook and middleware :func:`instrument` installed on one spooler."""

    def __init__(
        self,
        spooler: Spooler,
        tracer: Tracer,
        *,
        propagator: TextMapPropagator | None = None,
        parent: Parent = "child",
    ) -> None:
        if parent not in ("child", "link"):
            raise ConfigurationError(f'parent= must be "child" or "link", not {parent!r}')
        self.spooler = spooler
        self.tracer = tracer
        self.propagator = propagator
        self.parent: Parent = parent

    # -- producer ------------------------------------------------------------------
    def spool_hook(self, task: str, queue: str) -> dict[str, str] | None:
        """Start and end the PRODUCER span; return the trace context as job headers."""
        from opentelemetry.trace import SpanKind

        try:
            with self.tracer.start_as_current_span(
                f"{task} send",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.destination.name": queue,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "send",
                    "spoolhouse.task": task,
                },
            ):
                carrier: dict[str, str] = {}
                self._inject(carrier)
        except Exception:
            # tracing must never stop a job from being spooled
            log.exception("cannot record the trace context of a %s job", task)
            return None
        return carrier or None

    def _inject(self, carrier: dict[str, str]) -> None:
        if self.propagator is not None:
            self.propagator.inject(carrier)
        else:
            from opentelemetry import propagate

            propagate.inject(carrier)

    # -- consumer ------------------------------------------------------------------
    def middleware(self, running: RunningJob, call_next: Callable[[], Any]) -> Any:
        """Run the attempt inside a CONSUMER span made from the job's headers."""
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode

        headers = running.headers
        if self.propagator is not None:
            extracted = self.propagator.extract(headers, context=otel_context.Context())
        else:
            from opentelemetry import propagate

            extracted = propagate.extract(headers, context=otel_context.Context())
        producer = trace.get_current_span(extracted).get_span_context()
        links = [Link(producer)] if producer.is_valid else []
        if self.parent == "link":
            # keep the extracted baggage, drop the parent: the attempt starts a new trace
            extracted = trace.set_span_in_context(trace.INVALID_SPAN, extracted)
        job = running.job
        token = otel_context.attach(extracted)
        try:
            with self.tracer.start_as_current_span(
                f"{job.task} process",
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.destination.name": job.queue,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.message.id": job.id,
                    "spoolhouse.task": job.task,
                    "spoolhouse.attempt": job.attempt,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    return call_next()
                except Exception as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                    raise
        finally:
            otel_context.detach(token)


def instrumentation(spooler: Spooler) -> Instrumentation | None:
    """The :class:`Instrumentation` installed on ``spooler``, if any."""
    for hook in spooler.spool_hooks:
        owner = getattr(hook, "__self__", None)
        if isinstance(owner, Instrumentation):
            return owner
    return None


def instrument(
    spooler: Spooler,
    tracer_provider: TracerProvider | None = None,
    *,
    propagator: TextMapPropagator | None = None,
    parent: Parent = "child",
) -> Instrumentation:
    """Trace ``spooler``'s jobs: a PRODUCER span per ``.spool()``, a CONSUMER span per attempt.

    :param tracer_provider: where spans go; the global provider by default
        (looked up when spans start, so it may be set after this call).
    :param propagator: how the trace context is written to and read from job
        headers; the global propagator by default.
    :param parent: ``"child"`` (default): each attempt's span is a child of the
        producer span, in the same trace, and links to it; ``"link"``: each
        attempt starts a new trace that links to the producer span.

    Idempotent: a second call on the same spooler returns the existing
    instrumentation unchanged (its arguments are ignored).
    """
    _require()
    from opentelemetry import trace

    from . import __version__

    with _lock:
        existing = instrumentation(spooler)
        if existing is not None:
            return existing
        tracer = trace.get_tracer("spoolhouse", __version__, tracer_provider=tracer_provider)
        inst = Instrumentation(spooler, tracer, propagator=propagator, parent=parent)
        spooler.add_spool_hook(inst.spool_hook)
        # outermost, so that the span covers the other middleware too
        spooler.middleware.insert(0, inst.middleware)
        return inst


def uninstrument(spooler: Spooler) -> bool:
    """Remove what :func:`instrument` added to ``spooler``; ``False`` if it was not instrumented."""
    with _lock:
        inst = instrumentation(spooler)
        if inst is None:
            return False
        spooler.spool_hooks[:] = [
            h for h in spooler.spool_hooks if getattr(h, "__self__", None) is not inst
        ]
        spooler.middleware[:] = [
            m for m in spooler.middleware if getattr(m, "__self__", None) is not inst
        ]
        return True
