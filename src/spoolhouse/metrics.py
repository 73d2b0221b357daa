"""Prometheus metrics: job outcomes, durations and queue depths.

Needs the ``metrics`` extra (``pip install 'spoolhouse[metrics]'``, which
installs ``prometheus_client``); importing this module works without it, and
every function raises :class:`~spoolhouse.errors.ConfigurationError` naming the
extra when it is missing.

Metrics
-------
``spoolhouse_jobs_total{task, queue, outcome}`` (counter)
    Attempts that ended, by outcome: ``succeeded``, ``retry``, ``failed``,
    ``cancelled`` (the worker's outcome kinds).
``spoolhouse_job_duration_seconds{task, queue}`` (histogram)
    Seconds each attempt ran, whatever its outcome (:data:`DURATION_BUCKETS`).
``spoolhouse_queue_jobs{queue, state}`` (gauge, read from the store at scrape time)
    Stored jobs per queue and state (``pending``, ``running``, ``succeeded``,
    ``failed``, ``cancelled``); every state of every known queue is present.
``spoolhouse_queue_oldest_due_age_seconds{queue}`` (gauge, read at scrape time)
    How long the earliest due pending job of the queue has been waiting
    (``now - run_at``); 0 when nothing is due. The number to alert on when
    workers fall behind.

Ways to serve them
------------------
* ``spoolhouse worker --metrics-port 9100`` calls :func:`serve_metrics`: the
  supervisor counts what its worker processes report and serves ``/metrics``
  from a thread, aggregated over every child.
* :func:`metrics_wsgi_app` is a WSGI app of the store gauges (and of the
  counters of a registry you pass), to mount in a web app.
* :func:`instrument_worker` counts the jobs of a :class:`~spoolhouse.worker.Worker`
  you run yourself, into a registry you serve.

Each of these uses its own registry, never ``prometheus_client.REGISTRY``, so
several spoolers (and tests) in one process do not collide.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .errors import ConfigurationError
from .job import Job, JobState

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from .spooler import Spooler
    from .worker.worker import Worker

__all__ = [
    "DURATION_BUCKETS",
    "BackendCollector",
    "JobMetrics",
    "MetricsServer",
    "instrument_worker",
    "job_metrics",
    "metrics_wsgi_app",
    "serve_metrics",
]

log = logging.getLogger("spoolhouse.metrics")

#: Histogram buckets of ``spoolhouse_job_duration_seconds``: 5 ms to 10 min.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    600.0,
)

#: Names of the gauges :class:`BackendCollector` computes at scrape time.
QUEUE_JOBS = "spoolhouse_queue_jobs"
QUEUE_OLDEST_DUE_AGE = "spoolhouse_queue_oldest_due_age_seconds"

#: Seconds a scrape connection may stay idle before the metrics server drops it.
REQUEST_TIMEOUT = 10.0


def _require() -> None:
    """Raise a ConfigurationError naming the extra when ``prometheus_client`` is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "Prometheus metrics need the prometheus_client package: "
            "pip install 'spoolhouse[metrics]'"
        ) from exc


# -- counters --------------------------------------------------------------------------
class JobMetrics:
    """The job counter and duration histogram, registered in ``registry``.

    Call :meth:`observe` (or the object itself: it is a supervisor listener)
    once per attempt that ended. Use :func:`job_metrics` to get the one
    instance of a registry: creating two in the same registry raises.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        _require()
        from prometheus_client import Counter, Histogram

        self.registry = registry
        self.jobs: Counter = Counter(
            "spoolhouse_jobs", "Job attempts that ended, by outcome.",
            ["task", "queue", "outcome"], registry=registry,
        )
        self.duration: Histogram = Histogram(
            "spoolhouse_job_duration_seconds", "Seconds each job attempt ran.",
            ["task", "queue"], buckets=DURATION_BUCKETS, registry=registry,
        )

    def observe(self, task: str, queue: str, outcome: str, duration: float) -> None:
        """Count one attempt of ``task`` that ended with ``outcome`` after ``duration`` s.

        Never raises: it runs inside the supervisor loop and the worker.
        """
        try:
            self.jobs.labels(task, queue, outcome).inc()
            self.duration.labels(task, queue).observe(max(float(duration), 0.0))
        except Exception:
            log.exception("cannot record metrics for a %s job of %s", outcome, task)

    __call__ = observe


_by_registry: weakref.WeakKeyDictionary[Any, JobMetrics] = weakref.WeakKeyDictionary()
_by_registry_lock = threading.Lock()


def job_metrics(registry: CollectorRegistry) -> JobMetrics:
    """The :class:`JobMetrics` of ``registry``, created on first use."""
    with _by_registry_lock:
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = JobMetrics(registry)
        return metrics


# -- gauges read from the store ----------------------------------------------------------
class BackendCollector:
    """Queue gauges computed from the spooler's store at each scrape.

    Per scrape: one ``counts()`` (the grouped count ``spoolhouse status``
    shows) and, only for queues holding pending jobs, one ``next_due()`` (an
    index read). When the store cannot be read the scrape carries no gauges
    (the failure is logged) rather than failing the whole response.
    """

    def __init__(self, spooler: Spooler) -> None:
        self.spooler = spooler

    def describe(self) -> Iterable[Metric]:
        _require()
        from prometheus_client.metrics_core import GaugeMetricFamily

        return [
            GaugeMetricFamily(QUEUE_JOBS, "", labels=["queue", "state"]),
            GaugeMetricFamily(QUEUE_OLDEST_DUE_AGE, "", labels=["queue"]),
        ]

    def read(self) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
        """``({queue: {state: n}}, {queue: oldest due age})`` for every known queue."""
        backend = self.spooler.backend
        counts = backend.counts()
        now = self.spooler.clock.now()
        queues = sorted(set(self.spooler.queues()) | set(counts))
        states = [state.value for state in JobState]
        jobs = {q: {s: int(counts.get(q, {}).get(s, 0)) for s in states} for q in queues}
        ages: dict[str, float] = {}
        for queue in queues:
            due = None
            if jobs[queue][JobState.PENDING.value]:
                due = backend.next_due([queue], now=now)
            ages[queue] = max(now - due, 0.0) if due is not None else 0.0
        return jobs, ages

    def collect(self) -> Iterator[Metric]:
        _require()
        from prometheus_client.metrics_core import GaugeMetricFamily

        try:
            jobs, ages = self.read()
        except Exception as exc:
            log.warning("metrics: cannot read queue counts from the store: %s", exc)
            return
        family = GaugeMetricFamily(
            QUEUE_JOBS, "Stored jobs per queue and state.", labels=["queue", "state"]
        )
        for queue, per_state in jobs.items():
            for state, n in per_state.items():
                family.add_metric([queue, state], n)
        yield family
        family = GaugeMetricFamily(
            QUEUE_OLDEST_DUE_AGE,
            "Seconds the earliest due pending job of the queue has waited (0: none due).",
            labels=["queue"],
        )
        for queue, age in ages.items():
            family.add_metric([queue], age)
        yield family


class _Forward:
    """Collects another registry's metrics, except the queue gauges (computed elsewhere)."""

    skip = frozenset({QUEUE_JOBS, QUEUE_OLDEST_DUE_AGE})

    def __init__(self, registry: Collector) -> None:
        self.registry = registry

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.name not in self.skip:
                yield family


# -- serving -----------------------------------------------------------------------------
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def metrics_wsgi_app(spooler: Spooler, registry: CollectorRegistry | None = None) -> WSGIApp:
    """A WSGI app answering every request with the Prometheus text of ``spooler``'s gauges.

    With ``registry`` (for example the one given to :func:`instrument_worker`),
    its metrics are served too; the queue gauges are computed here, so do not
    register a :class:`BackendCollector` in it as well. Honors
    ``Accept-Encoding: gzip`` and the OpenMetrics ``Accept`` header.

    Mount it under ``/metrics`` of a web app; in a Flask view (behind your own
    access check): ``return Response.from_app(app, request.environ)``.
    """
    _require()
    from prometheus_client import CollectorRegistry, make_wsgi_app

    served = CollectorRegistry()
    served.register(BackendCollector(spooler))
    if registry is not None:
        served.register(_Forward(registry))
    app: WSGIApp = make_wsgi_app(served)
    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape; idle connections are dropped."""

    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(WSGIServer):
    """One request at a time, on one thread: the store is read from a single connection."""

    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: request from %s failed", client_address, exc_info=True)


@dataclass
class MetricsServer:
    """A running ``/metrics`` server (see :func:`serve_metrics`)."""

    host: str
    port: int
    metrics: JobMetrics
    registry: CollectorRegistry
    server: WSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


class Supervised(Protocol):
    """What :func:`serve_metrics` needs of a supervisor."""

    spooler: Spooler
    listeners: list[Callable[[str, str, str, float], None]]


def serve_metrics(supervisor: Supervised, *, host: str, port: int) -> MetricsServer:
    """Count the supervisor's job outcomes and serve them at ``http://host:port/metrics``.

    Registers a listener on ``supervisor.listeners`` (worker processes report
    every outcome to the supervisor, so the counters cover all of them) and
    starts a daemon thread serving a dedicated registry: the counters, the
    duration histogram, and the queue gauges read from the store at scrape
    time. ``port=0`` picks a free port (see ``.port`` of the result).
    """
    _require()
    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry()
    metrics = JobMetrics(registry)
    registry.register(BackendCollector(supervisor.spooler))
    app = make_wsgi_app(registry)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {exc}") from exc

    class Server(_Server):
        address_family = family

    try:
        server = Server((host, port), _QuietHandler)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; pick another "
            "--metrics-port"
        ) from exc
    server.set_app(app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="spoolhouse-metrics",
        daemon=True,
    )
    thread.start()
    supervisor.listeners.append(metrics.observe)
    served = MetricsServer(host=host, port=int(server.server_address[1]), metrics=metrics,
                           registry=registry, server=server, thread=thread)
    log.info("serving Prometheus metrics at %s", served.url)
    return served


# -- a worker run in-process -------------------------------------------------------------
class _OutcomeHook:
    """``Worker.on_outcome`` that counts into ``metrics``, then calls the previous hook."""

    def __init__(
        self, metrics: JobMetrics, inner: Callable[[Job, str, float], None] | None
    ) -> None:
        self.metrics = metrics
        self.inner = inner

    def __call__(self, job: Job, kind: str, duration: float) -> None:
        self.metrics.observe(job.task, job.queue, kind, duration)
        if self.inner is not None:
            self.inner(job, kind, duration)

    def counts_into(self, metrics: JobMetrics) -> bool:
        hook: Any = self
        while isinstance(hook, _OutcomeHook):
            if hook.metrics is metrics:
                return True
            hook = hook.inner
        return False


def instrument_worker(worker: Worker, registry: CollectorRegistry) -> JobMetrics:
    """Count the outcomes of a :class:`~spoolhouse.worker.Worker` you run yourself.

    Chains the worker's ``on_outcome`` hook (an existing hook still runs) and
    returns the registry's :class:`JobMetrics`. Several workers may share one
    registry; instrumenting a worker twice with the same registry counts once.
    Serve the registry yourself, for example with
    ``metrics_wsgi_app(spooler, registry)`` or
    ``prometheus_client.start_http_server(9100, registry=registry)``.

    Example::

        registry = prometheus_client.CollectorRegistry()
        worker = spooler.worker(threads=4)
        instrument_worker(worker, registry)
        worker.run()
    """
    metrics = job_metrics(registry)
    current = worker.on_outcome
    if isinstance(current, _OutcomeHook) and current.counts_into(metrics):
        return metrics
    worker.on_outcome = _OutcomeHook(metrics, current)
    return metrics
