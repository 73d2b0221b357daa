"""Worker: claims due jobs, runs them on a thread pool, heartbeats their leases.

``run_once(now)`` and ``drain()`` are the single-step forms tests use;
``run()`` is the loop a worker process runs.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .. import signals
from ..backends.base import LeaseState, TaskLimit
from ..context import RunningJob
from ..errors import BackendUnavailable
from ..job import Job
from ..lifecycle import Cancelled, Complete, Fail, Outcome, RetryAt, parse_error
from .executor import execute

if TYPE_CHECKING:
    from ..spooler import Spooler

log = logging.getLogger("spoolhouse.worker")

#: Longest an idle worker sleeps before looking again, when no wake-up arrives.
#: Wake-ups make new jobs start at once; this bounds the cost of a lost one.
IDLE_CHECK = 1.0
#: Longest wait between attempts to reach a store that does not answer.
MAX_OUTAGE_BACKOFF = 5.0


def task_limits(spooler: Spooler) -> dict[str, TaskLimit]:
    """The concurrency and rate limits of the spooler's tasks, for ``claim``."""
    limits: dict[str, TaskLimit] = {}
    for name in spooler.registry:
        config = spooler.registry.get(name).config
        if config.concurrency is None and config.rate is None:
            continue
        count, per = config.rate if config.rate is not None else (None, 1.0)
        limits[name] = TaskLimit(concurrency=config.concurrency, rate=count, per=per)
    return limits


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(2).hex()}"


class Worker:
    """Runs jobs of ``queues`` (in that order of preference) in this process.

    :param threads: jobs run at once in this process.
    :param max_tasks: stop claiming after this many jobs (the process is recycled).
    :param on_start: called with each claimed job before it runs (the supervisor
        uses it to track deadlines); ``on_finish`` after its outcome is recorded.
    :param on_outcome: called with ``(job, kind, duration)`` once an outcome is
        recorded; kind is succeeded, retry, failed or cancelled.
    """

    def __init__(
        self,
        spooler: Spooler,
        *,
        queues: Sequence[str] | None = None,
        threads: int = 1,
        worker_id: str | None = None,
        max_tasks: int | None = None,
        on_start: Callable[[Job], None] | None = None,
        on_finish: Callable[[Job], None] | None = None,
        on_outcome: Callable[[Job, str, float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.spooler = spooler
        self.queues = list(queues) if queues else spooler.queues()
        self.threads = threads
        self.worker_id = worker_id or make_worker_id()
        self.max_tasks = max_tasks
        self.on_start = on_start
        self.on_finish = on_finish
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()
        self.processed = 0
        self._inflight: dict[str, tuple[Job, RunningJob]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._hard = threading.Event()
        self._draining = False
        self._hb_stop = threading.Event()
        self.limits = task_limits(spooler)

    # -- single steps --------------------------------------------------------------
    def run_once(self, now: float | None = None) -> Job | None:
        """Claim one due job at ``now``, run it here, record its outcome; return it.

        Returns ``None`` when nothing is due. Timeouts are not enforced here
        (that needs a separate process; see the supervisor).
        """
        at = self.spooler.clock.now() if now is None else now
        jobs = self.spooler.backend.claim(
            self.queues, worker_id=self.worker_id, now=at, lease=self.spooler.lease, limit=1,
            limits=self.limits,
        )
        if not jobs:
            return None
        self._process(jobs[0])
        return jobs[0]

    def drain(self, *, max_jobs: int | None = None) -> int:
        """``run_once`` until nothing is due; return how many jobs ran."""
        count = 0
        while max_jobs is None or count < max_jobs:
            if self.run_once() is None:
                break
            count += 1
        return count

    def run_job_id(self, job_id: str) -> None:
        """Inline mode: run what is due in the job's queue (re-entrant calls are no-ops)."""
        if self._draining:
            return
        self._draining = True
        try:
            self.drain()
        finally:
            self._draining = False

    # -- one job -------------------------------------------------------------------
    def _process(self, job: Job, *, announced: bool = False) -> None:
        backend = self.spooler.backend
        token = job.lease or ""

        def report(progress: str) -> bool:
            return backend.set_progress(job.id, token, progress) is LeaseState.ABORT

        running = RunningJob(job, report)
        if job.abort_requested:
            running.request_abort()
        with self._lock:
            self._inflight[job.id] = (job, running)
        try:
            if self.on_start is not None and not announced:
                self.on_start(job)
            signals.send(signals.job_started, self.spooler, job=job)
            began = time.perf_counter()
            outcome = execute(
                self.spooler, job, running, now=self.spooler.clock.now, rng=self.rng
            )
            self.apply(job, outcome, duration=time.perf_counter() - began)
        finally:
            with self._changed:
                self._inflight.pop(job.id, None)
                self.processed += 1
                self._changed.notify_all()
            if self.on_finish is not None:
                self.on_finish(job)

    def apply(self, job: Job, outcome: Outcome, *, duration: float = 0.0) -> bool:
        """Record ``outcome`` under this attempt's lease. ``False`` if the lease was lost."""
        backend = self.spooler.backend
        token = job.lease or ""
        now = self.spooler.clock.now()
        if isinstance(outcome, Complete):
            ok = backend.complete(
                job.id, token, now=now, result=outcome.result, expires_at=outcome.expires_at
            )
            kind = "succeeded"
        elif isinstance(outcome, Cancelled):
            ok = backend.abort(job.id, token, now=now, error=outcome.error,
                               expires_at=outcome.expires_at)
            kind = "cancelled"
        elif isinstance(outcome, RetryAt):
            ok = backend.retry(
                job.id, token, now=now, run_at=outcome.run_at, error=outcome.error,
                count=outcome.count,
            )
            kind = "retry"
        else:
            assert isinstance(outcome, Fail)
            ok = backend.fail(job.id, token, now=now, error=outcome.error,
                              expires_at=outcome.expires_at)
            kind = "failed"
        if ok:
            log.debug("job %s (%s) attempt %d: %s", job.id, job.task, job.attempt, kind)
            error = None if isinstance(outcome, Complete) else parse_error(outcome.error)
            signals.send(signals.BY_OUTCOME[kind], self.spooler, job=job, duration=duration,
                         error=error)
            if self.on_outcome is not None:
                self.on_outcome(job, kind, duration)
        else:
            log.warning(
                "job %s (%s) attempt %d: lease_lost; outcome %s not recorded (the job was "
                "rescued after this worker missed its heartbeats, and runs elsewhere)",
                job.id, job.task, job.attempt, kind,
            )
        return ok

    # -- the loop ------------------------------------------------------------------
    def stop(self, *, hard: bool = False) -> None:
        """Stop claiming. ``hard``: also stop waiting for running jobs."""
        self._stop.set()
        if hard:
            self._hard.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def inflight(self) -> list[Job]:
        with self._lock:
            return [job for job, _ in self._inflight.values()]

    def run(self, *, burst: bool = False, shutdown_timeout: float = 30.0) -> None:
        """Claim and run jobs until :meth:`stop` (or, with ``burst``, until none is due).

        On stop, running jobs get ``shutdown_timeout`` seconds to finish; the
        leases of those still running then are released so that they run
        again elsewhere at once.
        """
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="spoolhouse-heartbeat",
                                     daemon=True)
        heartbeat.start()
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="spoolhouse-job")
        outage = 0.0
        try:
            while not self._stop.is_set():
                try:
                    if not self._step(pool, burst):
                        break
                    outage = 0.0
                except BackendUnavailable as exc:
                    # the store is down or busy: keep running jobs, try again with backoff
                    outage = min(max(outage * 2, 0.1), MAX_OUTAGE_BACKOFF)
                    log.warning("store unavailable (%s); retrying in %.1fs", exc, outage)
                    self._stop.wait(outage)
            self._finish(shutdown_timeout)
        finally:
            self._hb_stop.set()
            pool.shutdown(wait=not self._hard.is_set(), cancel_futures=True)

    def _step(self, pool: ThreadPoolExecutor, burst: bool) -> bool:
        """One pass of the loop: claim and dispatch, or wait. ``False`` ends the loop."""
        backend = self.spooler.backend
        clock = self.spooler.clock
        if self.max_tasks is not None and self.processed + len(self._inflight) >= self.max_tasks:
            return False
        with self._changed:
            free = self.threads - len(self._inflight)
            if free <= 0:
                self._changed.wait(IDLE_CHECK)
                return True
        if self.max_tasks is not None:
            free = min(free, self.max_tasks - self.processed - len(self._inflight))
        now = clock.now()
        jobs = backend.claim(
            self.queues, worker_id=self.worker_id, now=now, lease=self.spooler.lease,
            limit=free, limits=self.limits,
        )
        if jobs:
            for job in jobs:
                with self._lock:
                    # reserve the slot before the pool thread starts
                    self._inflight[job.id] = (job, RunningJob(job))
                if self.on_start is not None:
                    self.on_start(job)
                pool.submit(self._process, job, announced=True)
            return True
        if burst:
            with self._changed:
                if not self._inflight:
                    return False
                self._changed.wait(IDLE_CHECK)
            return True
        due = backend.next_due(self.queues, now=now)
        pause = IDLE_CHECK if due is None else min(max(due - now, 0.0), IDLE_CHECK)
        if pause > 0:
            backend.wait(self.queues, pause)
        return True

    def _finish(self, shutdown_timeout: float) -> None:
        monotonic = self.spooler.clock.monotonic
        deadline = monotonic() + shutdown_timeout
        with self._changed:
            while self._inflight and not self._hard.is_set():
                left = deadline - monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, IDLE_CHECK))
        if self.release_inflight():
            # The released jobs run elsewhere from now on: stop waiting for the threads
            # still running them here (a worker process exits right after ``run``).
            self._hard.set()

    def release_inflight(self) -> int:
        """Give back the leases of jobs still running, so they run again elsewhere now."""
        now = self.spooler.clock.now()
        released = 0
        for job in self.inflight():
            if self.spooler.backend.release(job.id, job.lease or "", now=now):
                released += 1
                log.info("job %s (%s): lease released at shutdown", job.id, job.task)
        return released

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.spooler.heartbeat):
            self.heartbeat()

    def heartbeat(self, now: float | None = None) -> None:
        """Extend the leases of running jobs; pass cancellation requests to them."""
        with self._lock:
            held = {jid: (job, running) for jid, (job, running) in self._inflight.items()}
        if not held:
            return
        at = self.spooler.clock.now() if now is None else now
        try:
            states = self.spooler.backend.extend_leases(
                {jid: job.lease or "" for jid, (job, _) in held.items()},
                now=at, lease=self.spooler.lease,
            )
        except Exception:
            log.exception("heartbeat failed; will try again")
            return
        for jid, state in states.items():
            if state is LeaseState.ABORT:
                held[jid][1].request_abort()
            elif state is LeaseState.LOST:
                log.warning("job %s: lease_lost (rescued elsewhere)", jid)
