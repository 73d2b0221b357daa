"""Spooler: the registry, the backend, the serializer and the clock, in one object."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta, tzinfo
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import signals
from .backends import DEFAULT_URL, open_backend
from .backends.base import Backend
from .clock import SYSTEM_CLOCK, Clock
from .errors import ConfigurationError, PayloadTooLarge, UnknownTask
from .handle import JobHandle
from .job import Job, JobBatch, JobState, new_job_id, new_job_ids
from .periodic import Missed, Schedule, interval_seconds, parse_rate, parse_tz
from .redact import DEFAULT_REDACT, Redactor
from .registry import Registry, default_name
from .retry import RetryPolicy
from .task import (
    SpoolOptions,
    Task,
    TaskConfig,
    check_key,
    check_priority,
    check_queue,
    check_timeout,
)
from .timing import resolve_run_at

if TYPE_CHECKING:
    from .context import RunningJob
    from .serializer import Serializer
    from .threads import ThreadTask
    from .worker.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("spoolhouse")

#: ``(running_job, call_next) -> result``: wraps every task execution in a worker.
Middleware = Callable[["RunningJob", Callable[[], Any]], Any]

#: ``hook(task_name, queue) -> headers or None``: called in ``.spool()``; the
#: headers (JSON-able str → str) are stored with the job (trace context, …).
SpoolHook = Callable[[str, str], "dict[str, str] | None"]

_UNSET: Any = object()


class Spooler:
    """Durable background jobs.

    :param url: where jobs are stored: ``sqlite:///spoolhouse.db`` (the default,
        a file in the working directory), ``redis://host:6379/0``, ``memory://``
        for tests, or ``inline://`` to run each job right away in the caller
        (after a real serialize round trip). A Flask app may be passed instead;
        see :meth:`init_app`.
    :param serializer: how arguments and results are stored; JSON with tagged
        types by default. Pickle is never used unless passed here explicitly.
    :param clock: where time comes from; tests pass a ``FakeClock``.
    :param max_payload: largest serialized arguments accepted, in bytes.
    :param result_ttl: seconds a finished job and its result are kept (``None``: forever).
    :param failed_ttl: seconds a failed (dead-letter) job is kept (``None``: forever).
    :param lease: seconds a worker holds a job between heartbeats before it is
        presumed dead and the job is rescued.
    :param heartbeat: seconds between lease extensions.
    :param max_lost: a job whose worker died this many times is failed (poison pill).
    :param redact: key patterns whose argument values are secret (default
        ``password``, ``token``, ``secret``, ``authorization``, ``api_key``…):
        their values are scrubbed from stored errors, tracebacks and worker logs.
    :param backend_options: passed to the backend (``synchronous=``, ``busy_timeout=``,
        ``prefix=``, ``enqueue_timeout=``…).

    Example::

        spooler = Spooler("sqlite:///var/spool.db")

        @spooler.task(retries=3, timeout=30)
        def send_email(to: str, subject: str) -> str: ...

        job = send_email.spool("a@b.c", subject="hi")
    """

    def __init__(
        self,
        url: Any = None,
        *,
        serializer: Serializer | None = None,
        clock: Clock | None = None,
        max_payload: int = 1 << 20,
        result_ttl: float | None = 86400.0,
        failed_ttl: float | None = 30 * 86400.0,
        lease: float = 30.0,
        heartbeat: float = 10.0,
        max_lost: int = 3,
        redact: tuple[str, ...] | None = None,
        **backend_options: Any,
    ) -> None:
        app = None
        if url is not None and not isinstance(url, str):
            if hasattr(url, "config") and hasattr(url, "extensions"):
                app, url = url, None  # a Flask app: Spooler(app)
            else:
                raise ConfigurationError(
                    f"Spooler() takes a backend URL string or a Flask app, not {type(url).__name__}"
                )
        if heartbeat >= lease:
            raise ConfigurationError(
                f"heartbeat ({heartbeat}s) must be shorter than lease ({lease}s), or leases "
                "expire between heartbeats and running jobs are rescued"
            )
        self.url: str | None = url
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.max_payload = max_payload
        self.result_ttl = result_ttl
        self.failed_ttl = failed_ttl
        self.lease = float(lease)
        self.heartbeat = float(heartbeat)
        self.max_lost = max_lost
        self.redactor = Redactor(DEFAULT_REDACT if redact is None else redact)
        self.backend_options = backend_options
        self.registry = Registry()
        self.middleware: list[Middleware] = []
        self.schedules: dict[str, Schedule] = {}
        self.spool_hooks: list[SpoolHook] = []
        self._serializer = serializer
        self._backend: Backend | None = None
        self._backend_pid = 0
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<Spooler {self.url or DEFAULT_URL} tasks={len(self.registry)}>"

    # -- wiring --------------------------------------------------------------------
    @property
    def serializer(self) -> Serializer:
        if self._serializer is None:
            from .serializer import JSONSerializer

            self._serializer = JSONSerializer()
        return self._serializer

    @property
    def backend(self) -> Backend:
        """The backend, opened on first use in each process (never shared across fork)."""
        backend = self._backend
        if backend is not None and self._backend_pid == os.getpid():
            return backend
        with self._lock:
            if self._backend is None or self._backend_pid != os.getpid():
                self._backend = self._open_backend()
                self._backend_pid = os.getpid()
            return self._backend

    def _open_backend(self) -> Backend:
        if self.url is None and "flask" in sys.modules:
            from .flask import check_unbound

            check_unbound(self)  # a Flask app's spooler before init_app: say so
        url = self.url or DEFAULT_URL
        if url.startswith("inline:"):
            from .backends.inline import InlineBackend

            return InlineBackend(url, runner=self._run_inline)
        return open_backend(url, **self.backend_options)

    def configure(self, url: str | None = None, **backend_options: Any) -> None:
        """Point the spooler at another store (used by ``init_app`` and tests)."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
            self._backend = None
            if url is not None:
                self.url = url
            self.backend_options.update(backend_options)

    def close(self) -> None:
        """Close this process's backend connections."""
        with self._lock:
            if self._backend is not None:
                self._backend.close()
                self._backend = None

    def init_app(self, app: Any) -> None:
        """Bind to a Flask app: configuration from ``app.config``, an app context per job.

        See :func:`spoolhouse.flask.init_app` for the configuration keys.
        """
        from .flask import init_app

        init_app(self, app)

    @overload
    def thread(self, fn: Callable[P, R], /) -> ThreadTask[P, R]: ...

    @overload
    def thread(
        self,
        *,
        max_workers: int = ...,
        max_pending: int = ...,
        block: bool = ...,
        timeout: float | None = ...,
        name: str | None = ...,
    ) -> Callable[[Callable[P, R]], ThreadTask[P, R]]: ...

    def thread(  # type: ignore[misc]  # mypy: ParamSpec overloads vs. the untyped implementation
        self, fn: Callable[..., Any] | None = None, /, **options: Any
    ) -> Any:
        """Run a function on a bounded thread pool in this process (not durable).

        For work that may be lost when the process exits; use ``.spool()`` for
        anything that matters. See :mod:`spoolhouse.threads`.
        """
        from .threads import thread_decorator

        return thread_decorator(self, fn, **options)

    def dashboard_blueprint(self, **options: Any) -> Any:
        """A Flask blueprint of the dashboard; see :func:`spoolhouse.dashboard.blueprint`.

        Example: ``app.register_blueprint(spooler.dashboard_blueprint(access=my_check),
        url_prefix="/spool")``.
        """
        from .dashboard import blueprint

        return blueprint(self, **options)

    def add_spool_hook(self, hook: SpoolHook) -> None:
        """Add headers to every job at spool time: ``hook(task_name, queue) -> dict | None``.

        The worker sees them as ``current_job().headers``. OpenTelemetry
        support uses this to carry the trace context from producer to worker.
        """
        self.spool_hooks.append(hook)

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every task execution: ``middleware(running_job, call_next)``."""
        self.middleware.append(middleware)

    # -- tasks ---------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = ...,
        queue: str = ...,
        priority: int = ...,
        retries: int = ...,
        backoff: float = ...,
        backoff_factor: float = ...,
        backoff_cap: float = ...,
        jitter: float = ...,
        retry_on: tuple[type[BaseException], ...] = ...,
        timeout: float | None = ...,
        result_ttl: float | None = ...,
        store_result: bool = ...,
        concurrency: int | None = ...,
        rate: str | None = ...,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy: ParamSpec overloads vs. the untyped implementation
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        retries: int = 3,
        backoff: float = 1.0,
        backoff_factor: float = 2.0,
        backoff_cap: float = 3600.0,
        jitter: float = 0.2,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        result_ttl: float | None = _UNSET,
        store_result: bool = True,
        concurrency: int | None = None,
        rate: str | None = None,
    ) -> Any:
        """Register a function as a task. Use as ``@spooler.task`` or ``@spooler.task(...)``.

        :param retries: retries after the first attempt when it raises (0: none).
        :param backoff: seconds before the first retry; each further retry waits
            ``backoff_factor`` times longer, up to ``backoff_cap``, spread by ``jitter``.
        :param retry_on: exception types that retry; others fail at once.
        :param timeout: seconds an attempt may run; the worker process running it
            is killed when it overruns and the attempt counts as failed.
        :param result_ttl: seconds to keep the finished job and result (default:
            the spooler's); ``store_result=False`` keeps the status but not the value.
            A job spooled with ``key=`` holds its key for as long as it is kept.
        :param concurrency: at most this many jobs of the task run at once, across
            every worker process and host; the others wait.
        :param rate: at most this many starts per period, e.g. ``"100/m"``
            (``s``, ``m``, ``h``, ``d``, or ``"3/10s"``), across every worker.
        """
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ConfigurationError(f"concurrency= must be an int >= 1, not {concurrency!r}")
        check_queue(queue)
        check_priority(priority)
        config_kwargs: dict[str, Any] = {
            "queue": queue,
            "priority": priority,
            "retry": RetryPolicy(
                retries=retries, base=backoff, factor=backoff_factor, cap=backoff_cap,
                jitter=jitter, retry_on=retry_on,
            ),
            "timeout": check_timeout(timeout),
            "result_ttl": self.result_ttl if result_ttl is _UNSET else result_ttl,
            "store_result": store_result,
            "concurrency": concurrency,
            "rate": None if rate is None else parse_rate(rate),
        }

        def decorate(f: Callable[..., Any]) -> Task[Any, Any]:
            config = TaskConfig(name=name or default_name(f), **config_kwargs)
            task = Task(self, f, config)
            self.registry.add(task)
            return task

        if fn is not None:
            return decorate(fn)
        return decorate

    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str | tzinfo | None = None,
        name: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        missed: Missed = "once",
        **task_options: Any,
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task that runs on a schedule, once per tick across every host.

        ``cron="*/5 * * * *"`` (in ``tz``, an IANA name; UTC by default) or
        ``every=30`` seconds (or a timedelta). Each run is an ordinary job, with
        the task's retries and timeout (``task_options`` go to :meth:`task`).
        After downtime the latest missed tick runs once (``missed="once"``) or
        is skipped (``missed="skip"``); a new schedule starts at its next tick.

        Example::

            @spooler.periodic(cron="0 9 * * mon", tz="Europe/Paris")
            def weekly_report() -> None: ...
        """
        zone = parse_tz(tz)
        seconds = None if every is None else interval_seconds(every)

        def decorate(fn: Callable[P, R]) -> Task[P, R]:
            task: Task[P, R] = self.task(name=name, **task_options)(fn)
            schedule = Schedule(
                name=task.name, task=task, cron=cron, every=seconds, tz=zone,
                args=tuple(args), kwargs=tuple(sorted((kwargs or {}).items())), missed=missed,
            )
            task.check_call(schedule.args, dict(schedule.kwargs))
            self.schedules[schedule.name] = schedule
            return task

        return decorate

    def queues(self) -> list[str]:
        """Queues of the registered tasks, ``default`` first."""
        names = {self.registry.get(n).config.queue for n in self.registry}
        names.add("default")
        return ["default", *sorted(names - {"default"})]

    # -- producing -----------------------------------------------------------------
    def build_job(
        self,
        task: Task[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        opts: SpoolOptions,
        now: float,
        headers: dict[str, str] | None = None,
    ) -> Job:
        """Validate a call and its options and make the job record; stores nothing."""
        shared = self._shared_fields(task, opts, now)
        return Job(
            id=new_job_id(now),
            payload=self._payload(task, args, kwargs),
            headers=self._headers(task, shared["queue"], headers),
            **shared,
        )

    def _shared_fields(self, task: Task[Any, Any], opts: SpoolOptions, now: float) -> dict[str, Any]:
        """The fields of a job that depend on the task and the options, not the call."""
        if task.name not in self.registry:
            raise UnknownTask(
                f"task {task.name!r} is not registered with this spooler; decorate it with "
                "@spooler.task on the spooler you spool through"
            )
        config = task.config
        run_at = resolve_run_at(now, at=opts.at, delay=opts.delay)
        retries = config.retry.retries
        if opts.retries is not None:
            retries = RetryPolicy(retries=opts.retries).retries
        return {
            "task": task.name,
            "queue": config.queue if opts.queue is None else check_queue(opts.queue),
            "priority": config.priority if opts.priority is None else check_priority(opts.priority),
            "run_at": run_at,
            "max_attempts": retries + 1,
            "timeout": config.timeout if opts.timeout is None else check_timeout(opts.timeout),
            "key": check_key(opts.key),
            "created_at": now,
            "result_ttl": config.result_ttl,
        }

    def _payload(self, task: Task[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]) -> bytes:
        """The call checked against the task's signature and serialized."""
        task.check_call(args, kwargs)
        # refuse an obviously oversized call before paying for its serialization
        flat = sum([len(v) for v in args if isinstance(v, str | bytes)])
        if kwargs:
            flat += sum([len(v) for v in kwargs.values() if isinstance(v, str | bytes)])
        if flat > self.max_payload:
            raise PayloadTooLarge(flat, self.max_payload)
        payload = self.serializer.dumps_call(args, kwargs)
        if len(payload) > self.max_payload:
            raise PayloadTooLarge(len(payload), self.max_payload)
        return payload

    def _headers(
        self, task: Task[Any, Any], queue: str, headers: dict[str, str] | None
    ) -> str | None:
        """The job's headers: those given, then each spool hook's (trace context, ...)."""
        if not headers and not self.spool_hooks:
            return None
        merged = dict(headers or {})
        for hook in self.spool_hooks:
            merged.update(hook(task.name, queue) or {})
        return json.dumps(merged, sort_keys=True) if merged else None

    def enqueue_call(
        self, task: Task[P, R], args: Sequence[Any], kwargs: dict[str, Any], opts: SpoolOptions
    ) -> JobHandle[R]:
        now = self.clock.now()
        job = self.build_job(task, args, kwargs, opts, now)
        stored = self.backend.enqueue(job, now=now)
        if stored.id == job.id:
            signals.send(signals.job_spooled, self, job=stored)
        return JobHandle(self, stored.id)

    def enqueue_calls(
        self,
        task: Task[P, R],
        calls: Iterable[tuple[Sequence[Any], dict[str, Any]]],
        opts: SpoolOptions,
    ) -> list[JobHandle[R]]:
        now = self.clock.now()
        # the options are checked once for the batch, each call on its own
        shared = self._shared_fields(task, opts, now)
        queue = shared["queue"]
        payloads: list[bytes] = []
        for index, (args, kwargs) in enumerate(calls):
            try:
                payloads.append(self._payload(task, args, kwargs))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"item {index}: {exc}") from exc
        if not payloads:
            return []
        if self.spool_hooks:
            headers = [self._headers(task, queue, None) for _ in payloads]
        else:
            headers = [None] * len(payloads)
        batch = JobBatch(
            Job(id="", payload=b"", **shared), new_job_ids(len(payloads), now), payloads, headers
        )
        store_batch = getattr(self.backend, "enqueue_batch", None)
        # unkeyed, every job is stored under its own id (or already was): the ids are
        # the answer, unless a job_spooled receiver wants each stored record
        if (
            store_batch is not None
            and batch.template.key is None
            and not signals.job_spooled.receivers
        ):
            store_batch(batch, now=now)
            return [JobHandle(self, job_id) for job_id in batch.ids]
        jobs = batch.jobs()
        stored = self.backend.enqueue_many(jobs, now=now)
        if signals.job_spooled.receivers:
            for new, kept in zip(jobs, stored, strict=True):
                if new.id == kept.id:
                    signals.send(signals.job_spooled, self, job=kept)
        return [JobHandle(self, j.id) for j in stored]

    # -- inspecting ----------------------------------------------------------------
    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle for a job id (from a log line, a URL, another process)."""
        return JobHandle(self, job_id)

    def wait_for(
        self, job_id: str, states: set[JobState], timeout: float | None
    ) -> Job:
        """Wait until the job is in one of ``states``; ``TimeoutError`` after ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            job = self.backend.get(job_id)
            if job is None:
                raise LookupError(f"job {job_id} is not in the store")
            if job.state in states:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"job {job_id} is still {job.state.value} after {timeout}s"
                    )
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    # -- executing -----------------------------------------------------------------
    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Worker:
        """An in-process worker for these queues (see :class:`spoolhouse.worker.Worker`)."""
        from .worker.worker import Worker

        return Worker(self, queues=queues, **options)

    def drain(self, queues: Sequence[str] | None = None, *, max_jobs: int | None = None) -> int:
        """Run every due job in this process until none is left; return how many ran.

        Jobs that retry into the future are not waited for; advance a
        ``FakeClock`` and drain again.
        """
        return self.worker(queues).drain(max_jobs=max_jobs)

    def _run_inline(self, job: Job) -> None:
        from .worker.worker import Worker

        Worker(self, queues=[job.queue], worker_id="inline").run_job_id(job.id)
