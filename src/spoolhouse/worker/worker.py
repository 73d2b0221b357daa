"""Worker: claims due jobs, runs them on threads, heartbeats their leases, acks in batches.

``run_once(now)`` and ``drain()`` are the single-step forms tests use;
``run()`` is the loop a worker process runs.

Inside ``run()``:

* one thread at a time claims (it holds the *claim turn*): a batch whose
  size adapts (doubling while claims come back full, shrinking when the queue
  runs short), so a deep queue costs one transaction per batch and a short one
  keeps its latency and fairness;
* ``threads`` executor threads run claimed jobs. An executor with nothing to
  run takes the claim turn itself, waits for a wake-up from the store, claims,
  and runs the first job it claimed: on an idle worker a new job goes from
  the store to its task on one thread, with no hand-off. The calling thread
  takes the turn only while every executor is busy, to claim ahead of them;
* a flusher thread records successes in batches (``complete_many``) within
  :data:`ACK_DELAY` seconds, at once when nothing else is waiting; a claim
  takes the successes buffered by then along into its own transaction when
  the backend has ``complete_and_claim``; other outcomes are recorded right
  away. An ack delayed by batching is never lost:
  the job stays leased (and heartbeated) until its batch commits, and runs
  again, at most once more, if the process dies first;
* a heartbeat thread extends the leases of every job the worker holds.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
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
#: Most jobs claimed ahead of the executor threads (only while jobs are fast:
#: see PREFETCH_IF_FASTER; the claim batch grows to it by doubling).
PREFETCH_MAX = 256
#: Most successes waiting to be recorded; executors wait when it is reached, so
#: a crash re-runs at most this many finished jobs (plus one batch being committed).
#: Each batch is one transaction: with no-op jobs on SQLite, 64 drained 23-24k
#: jobs/s with 2 processes, 256 (with PREFETCH_MAX 256) 29-32k. Only fast jobs
#: fill it: the flusher commits within ACK_DELAY, so a crash re-runs at most
#: the successes of the last ACK_DELAY plus one commit.
ACK_BATCH = 256
#: Longest a success waits to be recorded while other jobs keep the worker busy.
ACK_DELAY = 0.005
#: Claim ahead of the threads only while jobs take less than this on average:
#: prefetching long jobs would hold them away from idle workers.
PREFETCH_IF_FASTER = 0.010
#: At most about this much work (seconds, at the jobs' average duration) is
#: claimed ahead of the threads, up to ``prefetch`` jobs: 256 no-op jobs, but 50
#: jobs of 1 ms and 10 of 5 ms. What a worker holds ahead waits if it stops or
#: is cut off (its leases must expire before others run it), and idle workers
#: elsewhere cannot take it meanwhile.
PREFETCH_WORK = 0.050
#: First pause when every due job is held back by a concurrency or rate limit;
#: it doubles up to IDLE_CHECK while they stay blocked.
BLOCKED_MIN = 0.01
#: Jobs waiting locally behind jobs running longer than this are given back.
HOARD_LIMIT = 0.050

#: ``(job, kind, duration)`` reported once an outcome is recorded; kind is
#: succeeded, retry, failed, cancelled, or released (given back unstarted or at shutdown).
Done = tuple[Job, str, float]


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
    :param prefetch: most jobs claimed ahead of the threads (0: claim only for idle threads).
    :param on_claim: called with each claimed batch (the supervisor tracks what
        this process holds); ``on_start(job, previous)`` with a job about to run
        and the job the same thread ran before it (finished, its ack perhaps
        still buffered), or ``None``; ``on_ran(job)`` when a thread goes idle
        after running ``job``; ``on_done`` with batches of ``(job, kind,
        duration)`` once their outcome is recorded. A supervisor uses these to
        tell a job that was running when its process died (rescued, counted
        as lost) from one that had finished or not started (given back).
    :param on_outcome: called with ``(job, kind, duration)`` for each recorded
        outcome (kind: succeeded, retry, failed or cancelled).
    :param release_at_exit: when :meth:`run` returns after :meth:`stop` with
        jobs still running (past the shutdown timeout, or a cold stop), give
        their leases back. A supervised child passes ``False``: its process
        exits with them, and the supervisor gives them back once it has seen
        the process gone, so a released job can never still be finishing here
        while it runs elsewhere. A loop that ends on an error always releases.
    """

    def __init__(
        self,
        spooler: Spooler,
        *,
        queues: Sequence[str] | None = None,
        threads: int = 1,
        worker_id: str | None = None,
        max_tasks: int | None = None,
        prefetch: int = PREFETCH_MAX,
        on_claim: Callable[[list[Job]], None] | None = None,
        on_start: Callable[[Job, Job | None], None] | None = None,
        on_ran: Callable[[Job], None] | None = None,
        on_done: Callable[[list[Done]], None] | None = None,
        on_outcome: Callable[[Job, str, float], None] | None = None,
        rng: random.Random | None = None,
        release_at_exit: bool = True,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.spooler = spooler
        self.queues = list(queues) if queues else spooler.queues()
        self.threads = threads
        self.worker_id = worker_id or make_worker_id()
        self.max_tasks = max_tasks
        self.prefetch = max(prefetch, 0)
        self.on_claim = on_claim
        self.on_start = on_start
        self.on_ran = on_ran
        self.on_done = on_done
        self.on_outcome = on_outcome
        self.rng = rng or random.Random()
        self.release_at_exit = release_at_exit
        self.limits = task_limits(spooler)
        self.processed = 0  # outcomes recorded (or lost), for max_tasks
        self.claimed = 0
        # every job this worker holds a lease on: waiting, running or awaiting its ack
        self._held: dict[str, tuple[Job, RunningJob]] = {}
        self._ready: deque[Job] = deque()
        self._running = 0
        self._acks: list[tuple[Job, Complete, float]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ack_ready = threading.Condition(threading.Lock())
        self._flushing = threading.Lock()  # held from taking a batch until it is committed
        self._stop = threading.Event()
        self._hard = threading.Event()
        self._done_running = threading.Event()
        self._hb_stop = threading.Event()
        self._batch = threads
        self._claiming = False  # a thread holds the claim turn (is inside _step)
        self._idle = 0  # executors waiting for a job
        self._exhausted = False  # _step said the loop is over (burst drained, max_tasks)
        self._outage = 0.0  # current backoff while the store does not answer
        self._burst = False
        self._failure: BaseException | None = None  # an executor's claim raised: run() re-raises
        self._draining = False
        self._blocked = 0.0  # current pause while due jobs are held back by limits
        self._avg: float | None = None  # moving average of job durations (s); None: unknown
        self._started: dict[str, float] = {}  # running job id -> monotonic start
        self._committing: set[str] = set()  # ids in the ack batch being stored now

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
        job = jobs[0]
        with self._lock:
            self._held[job.id] = (job, self._running_job(job))
        outcome, duration = self._execute(job)
        self._record(job, outcome, duration)
        return job

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
    def _running_job(self, job: Job) -> RunningJob:
        backend = self.spooler.backend
        token = job.lease or ""

        def report(progress: str) -> bool:
            return backend.set_progress(job.id, token, progress) is LeaseState.ABORT

        running = RunningJob(job, report)
        if job.abort_requested:
            running.request_abort()
        return running

    def _execute(self, job: Job, running: RunningJob | None = None) -> tuple[Outcome, float]:
        if running is None:
            with self._lock:
                running = self._held[job.id][1]
        signals.send(signals.job_started, self.spooler, job=job)
        began = time.perf_counter()
        outcome = execute(self.spooler, job, running, now=self.spooler.clock.now, rng=self.rng)
        return outcome, time.perf_counter() - began

    def apply(self, job: Job, outcome: Outcome, *, duration: float = 0.0) -> bool:
        """Record ``outcome`` under this attempt's lease. ``False`` if the lease was lost."""
        backend = self.spooler.backend
        token = job.lease or ""
        now = self.spooler.clock.now()
        if isinstance(outcome, Complete):
            ok = backend.complete(
                job.id, token, now=now, result=outcome.result, expires_at=outcome.expires_at
            )
        elif isinstance(outcome, Cancelled):
            ok = backend.abort(job.id, token, now=now, error=outcome.error,
                               expires_at=outcome.expires_at)
        elif isinstance(outcome, RetryAt):
            ok = backend.retry(
                job.id, token, now=now, run_at=outcome.run_at, error=outcome.error,
                count=outcome.count,
            )
        else:
            assert isinstance(outcome, Fail)
            ok = backend.fail(job.id, token, now=now, error=outcome.error,
                              expires_at=outcome.expires_at)
        self._recorded(job, outcome, duration, ok)
        return ok

    def _record(self, job: Job, outcome: Outcome, duration: float) -> None:
        """Record one outcome now, then report it."""
        try:
            self.apply(job, outcome, duration=duration)
        finally:
            self._forget([(job, _kind(outcome), duration)])

    def _recorded(self, job: Job, outcome: Outcome, duration: float, ok: bool) -> None:
        kind = _kind(outcome)
        if not ok:
            log.warning(
                "job %s (%s) attempt %d: lease_lost; outcome %s not recorded (the job was "
                "rescued after this worker missed its heartbeats, and runs elsewhere)",
                job.id, job.task, job.attempt, kind,
            )
            return
        log.debug("job %s (%s) attempt %d: %s", job.id, job.task, job.attempt, kind)
        error = None if isinstance(outcome, Complete) else parse_error(outcome.error)
        signals.send(signals.BY_OUTCOME[kind], self.spooler, job=job, duration=duration,
                     error=error)
        if self.on_outcome is not None:
            self.on_outcome(job, kind, duration)

    def _forget(self, done: list[Done]) -> None:
        """The jobs' outcomes are recorded (or given up): drop them and report."""
        with self._changed:
            for job, _, _ in done:
                self._held.pop(job.id, None)
            self.processed += sum(1 for _, kind, _ in done if kind != "released")
            self._changed.notify_all()
        if self.on_done is not None and done:
            self.on_done(done)

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
        """Every job this worker holds: waiting to run, running, or awaiting its ack."""
        with self._lock:
            return [job for job, _ in self._held.values()]

    def run(self, *, burst: bool = False, shutdown_timeout: float = 30.0) -> None:
        """Claim and run jobs until :meth:`stop` (or, with ``burst``, until none is due).

        On stop, jobs claimed but not started are given back at once; running
        jobs get ``shutdown_timeout`` seconds to finish; the leases of those
        still running then are released so that they run again elsewhere.
        """
        helpers = [
            threading.Thread(target=self._heartbeat_loop, name="spoolhouse-heartbeat", daemon=True),
            threading.Thread(target=self._flush_loop, name="spoolhouse-acks", daemon=True),
        ]
        executors = [
            threading.Thread(target=self._executor_loop, name=f"spoolhouse-job-{i}", daemon=True)
            for i in range(self.threads)
        ]
        self._burst = burst
        for thread in helpers + executors:
            thread.start()
        try:
            while True:
                with self._changed:
                    # claim ahead only while every executor is busy; idle ones claim for themselves
                    while not self._over() and (self._claiming or self._idle):
                        self._changed.wait(IDLE_CHECK)
                    if self._over():
                        break
                    self._claiming = True
                self._claim_turn()
        finally:
            self._finish(shutdown_timeout, executors)
        if self._failure is not None:
            raise self._failure

    def _over(self) -> bool:
        """No more claims: stopping, or the loop ran out (lock held)."""
        return self._stop.is_set() or self._exhausted

    def _claim_turn(self) -> None:
        """One :meth:`_step` by the thread holding the claim turn (with outage backoff),
        then give the turn up."""
        try:
            if not self._step(self._burst):
                with self._changed:
                    self._exhausted = True
                    self._changed.notify_all()
            self._outage = 0.0
        except BackendUnavailable as exc:
            # the store is down or busy: keep running jobs, try again with backoff
            self._outage = min(max(self._outage * 2, 0.1), MAX_OUTAGE_BACKOFF)
            log.warning("store unavailable (%s); retrying in %.1fs", exc, self._outage)
            self._stop.wait(self._outage)
        finally:
            with self._changed:
                self._claiming = False
                self._changed.notify_all()

    def _step(self, burst: bool) -> bool:
        """One pass of the claim loop: claim a batch, or wait. ``False`` ends the loop."""
        backend = self.spooler.backend
        clock = self.spooler.clock
        with self._changed:
            if self.max_tasks is not None and self.claimed >= self.max_tasks:
                if not self._held:
                    return False
                self._changed.wait(IDLE_CHECK)
                return True
            waiting = len(self._ready)
            if waiting and self._hoarding():
                hoard = list(self._ready)
                self._ready.clear()
                self._avg = max(self._avg or 0.0, HOARD_LIMIT)
            else:
                hoard = []
            ahead = self._avg is not None and self._avg < PREFETCH_IF_FASTER
            if ahead:
                capacity = self.threads + self._prefetch_now() - waiting - self._running
                enough = waiting >= self.threads
            else:
                capacity = self.threads - waiting - self._running
                enough = capacity <= 0
            if not hoard and (enough or capacity <= 0):
                # enough local work: wait until the threads eat into it
                self._changed.wait(HOARD_LIMIT if waiting else IDLE_CHECK)
                return True
        if hoard:
            log.debug("giving back %d jobs queued behind long-running ones", len(hoard))
            self._give_back(hoard, clock.now())
            return True
        limit = max(min(self._batch, capacity), 1)
        if self.max_tasks is not None:
            limit = min(limit, self.max_tasks - self.claimed)
        now = clock.now()
        jobs = self._claim(limit, now)
        if len(jobs) >= limit:
            self._batch = min(self._batch * 2, self.threads + self._prefetch_now())
        else:
            self._batch = max(self.threads, len(jobs))
        if jobs:
            self._blocked = 0.0
            # announce before any thread can start them: a supervisor must hear of a
            # claim before a start, or it would take a killed job for an unstarted one
            if self.on_claim is not None:
                self.on_claim(jobs)
            with self._changed:
                for job in jobs:
                    self._held[job.id] = (job, self._running_job(job))
                    self._ready.append(job)
                self.claimed += len(jobs)
                self._changed.notify_all()
            return True
        if burst:
            with self._changed:
                if not self._held:
                    return False
                # nothing due now: wait for the running jobs (they may retry)
                self._changed.wait(IDLE_CHECK)
                return True
        # some threads are idle and nothing could be claimed: sleep until a job is
        # spooled or comes due. Due jobs that were not claimed are held back by a
        # task's concurrency or rate limit: look again with a growing pause.
        due = backend.next_due(self.queues, now=now)
        if due is not None and due <= now:
            self._blocked = min(max(self._blocked * 2, BLOCKED_MIN), IDLE_CHECK)
            pause = self._blocked
        else:
            self._blocked = 0.0
            pause = IDLE_CHECK if due is None else min(due - now, IDLE_CHECK)
        backend.wait(self.queues, pause)
        return True

    def _claim(self, limit: int, now: float) -> list[Job]:
        """Claim up to ``limit`` jobs; record the buffered successes in the same
        transaction when the backend can (``complete_and_claim``)."""
        backend = self.spooler.backend
        combined = getattr(backend, "complete_and_claim", None)
        if combined is not None:
            with self._flushing:  # a flush() meanwhile waits for these acks to be stored
                batch = self._take_acks()
                if batch:
                    items = [(job.id, job.lease or "", c.result, c.expires_at)
                             for job, c, _ in batch]
                    try:
                        done, jobs = combined(
                            items, self.queues, worker_id=self.worker_id, now=now,
                            lease=self.spooler.lease, limit=limit, limits=self.limits,
                        )
                    except BaseException:
                        # nothing was stored: the acks wait for the next flush or claim
                        with self._ack_ready:
                            self._acks[:0] = batch
                        raise
                    finally:
                        with self._lock:
                            self._committing = set()
                    self._acked(batch, done)
                    return list(jobs)
        return backend.claim(
            self.queues, worker_id=self.worker_id, now=now, lease=self.spooler.lease,
            limit=limit, limits=self.limits,
        )

    def _prefetch_now(self) -> int:
        """How many jobs to claim ahead of the threads at the jobs' average duration."""
        if not self._avg or self._avg <= 0:
            return self.prefetch
        return min(self.prefetch, max(1, int(PREFETCH_WORK / self._avg)))

    def _hoarding(self) -> bool:
        """All threads are busy with jobs that run long while others wait here (lock held)."""
        if self._running < self.threads or not self._started:
            return False
        oldest = min(self._started.values())
        return self.spooler.clock.monotonic() - oldest > HOARD_LIMIT

    def _executor_loop(self) -> None:
        previous: Job | None = None  # ran last on this thread; the supervisor is not told yet
        job: Job | None = None  # taken from _ready, to run next
        running: RunningJob | None = None
        while True:
            if job is None:
                with self._changed:
                    if not self._ready and previous is not None and self.on_ran is not None:
                        idle_after, previous = previous, None
                    else:
                        idle_after = None
                if idle_after is not None:
                    self.on_ran(idle_after)  # type: ignore[misc]
                job, running, claim = self._next_job()
                if claim:
                    try:
                        self._claim_turn()
                    except BaseException as exc:  # as if the claim loop itself had raised
                        log.exception("claiming failed; the worker stops")
                        self._failure = exc
                        self.stop()
                    continue
                if job is None:
                    return  # the worker is done running jobs
            assert running is not None
            duration: float | None = None
            try:
                if job.lost:
                    # this job took a worker down before: record the others' successes
                    # first, so that if it crashes again it takes no one else with it
                    self.flush()
                if self.on_start is not None:
                    self.on_start(job, previous)
                previous = None
                outcome, duration = self._execute(job, running)
                if isinstance(outcome, Complete):
                    with self._ack_ready:
                        while len(self._acks) >= ACK_BATCH and not self._done_running.is_set():
                            self._ack_ready.notify_all()
                            self._ack_ready.wait(ACK_DELAY)  # back-pressure: the flusher is behind
                        self._acks.append((job, outcome, duration))
                        # the first ack starts the flusher's ACK_DELAY clock; an idle
                        # worker or a full buffer has it flush at once (_ready is read
                        # without the lock: a stale answer only moves the flush)
                        if (not self._ready or len(self._acks) == 1
                                or len(self._acks) >= ACK_BATCH):
                            self._ack_ready.notify_all()
                else:
                    self._record(job, outcome, duration)
            except Exception:
                log.exception("job %s: the worker failed to run or record it; its lease will "
                              "expire and it will run again", job.id)
            finally:
                previous = job
                # one turn of the lock to finish this job and, if one waits, take the next
                with self._changed:
                    self._running -= 1
                    self._started.pop(job.id, None)
                    if duration is not None:
                        self._avg = (duration if self._avg is None
                                     else 0.8 * self._avg + 0.2 * duration)
                    job = running = None
                    if self._ready and not self._done_running.is_set():
                        job, running = self._take_ready()
                    self._changed.notify_all()

    def _next_job(self) -> tuple[Job | None, RunningJob | None, bool]:
        """Wait for a job to run; ``(job, its RunningJob, False)``, or ``(None, None,
        True)`` when this thread should claim, or ``(None, None, False)`` when done."""
        with self._changed:
            self._idle += 1
            try:
                while not self._ready and not self._done_running.is_set():
                    if not self._claiming and not self._over():
                        self._claiming = True  # nothing to run: claim for myself
                        return None, None, True
                    self._changed.wait()
            finally:
                self._idle -= 1
            if self._done_running.is_set():
                return None, None, False
            job, running = self._take_ready()
            self._changed.notify_all()
            return job, running, False

    def _take_ready(self) -> tuple[Job, RunningJob]:
        """Take the next claimed job to run (lock held)."""
        job = self._ready.popleft()
        self._running += 1
        self._started[job.id] = self.spooler.clock.monotonic()
        return job, self._held[job.id][1]

    def _flush_loop(self) -> None:
        while not self._done_running.is_set() or self._acks:
            with self._ack_ready:
                if not self._acks:
                    self._ack_ready.wait(IDLE_CHECK)
                if self._acks and len(self._acks) < ACK_BATCH:
                    with self._lock:
                        busy = bool(self._ready)
                    if busy:
                        # gather more while the threads are busy, ACK_DELAY at most
                        deadline = time.monotonic() + ACK_DELAY
                        while len(self._acks) < ACK_BATCH and (left := deadline - time.monotonic()) > 0:
                            self._ack_ready.wait(left)
            self.flush()

    def flush(self) -> None:
        """Record the buffered successes in one transaction.

        Returns once every success buffered before the call is recorded, also
        those a concurrent flush was committing.
        """
        with self._flushing:
            self._flush_locked()

    def _flush_locked(self) -> None:
        batch = self._take_acks()
        if not batch:
            return
        try:
            self._store_acks(batch)
        finally:
            with self._lock:
                self._committing = set()

    def _take_acks(self) -> list[tuple[Job, Complete, float]]:
        """The buffered successes, to be stored now (``_flushing`` held)."""
        with self._ack_ready:
            batch, self._acks = self._acks, []
            self._ack_ready.notify_all()  # executors waiting on a full buffer may go on
        if batch:
            with self._lock:
                # a heartbeat racing this commit finds these leases gone: that is no loss
                self._committing = {job.id for job, _, _ in batch}
        return batch

    def _store_acks(self, batch: list[tuple[Job, Complete, float]]) -> None:
        items = [(job.id, job.lease or "", c.result, c.expires_at) for job, c, _ in batch]
        delay = 0.05
        while True:
            try:
                done = self.spooler.backend.complete_many(items, now=self.spooler.clock.now())
                break
            except BackendUnavailable as exc:
                if self._hard.is_set():
                    # a cold stop: these jobs keep their leases and run again elsewhere
                    log.warning("store unavailable (%s); %d acks dropped at a cold stop",
                                exc, len(batch))
                    self._forget([(job, "released", d) for job, _, d in batch])
                    return
                log.warning("store unavailable (%s); %d acks wait, retrying in %.2fs",
                            exc, len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_OUTAGE_BACKOFF)
        self._acked(batch, done)

    def _acked(self, batch: list[tuple[Job, Complete, float]], done: Sequence[bool]) -> None:
        """Report a stored batch of successes (``done``: whose lease was still held)."""
        for (job, outcome, duration), ok in zip(batch, done, strict=True):
            self._recorded(job, outcome, duration, ok)
        self._forget([(job, "succeeded", duration) for job, _, duration in batch])

    def _finish(self, shutdown_timeout: float, executors: list[threading.Thread]) -> None:
        clock = self.spooler.clock
        # an executor may be claiming: let it finish, so nothing is added after this
        with self._changed:
            while self._claiming:
                self._changed.wait(IDLE_CHECK)
            self._claiming = True  # for good: no thread claims again
        now = clock.now()
        # jobs claimed but not started go back at once, and so do those the backend
        # claimed ahead for this worker's next claim (Redis: behind its wake-up wait)
        with self._changed:
            unstarted = list(self._ready)
            self._ready.clear()
        self._give_back(unstarted, now)
        release_ahead = getattr(self.spooler.backend, "release_ahead", None)
        if release_ahead is not None:
            try:
                release_ahead()
            except BackendUnavailable as exc:
                log.warning("could not give back jobs claimed ahead (%s); they run again "
                            "when their leases expire", exc)
        deadline = clock.monotonic() + shutdown_timeout
        with self._changed:
            while self._running and not self._hard.is_set():
                left = deadline - clock.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, IDLE_CHECK))
            self._done_running.set()
            self._changed.notify_all()
        with self._ack_ready:
            self._ack_ready.notify_all()
        self.flush()
        # what still runs now gets its lease released: here, or, when a supervisor
        # asked for this stop, by the supervisor once this process is gone. A loop
        # that ended on an error releases here: the parent would take the exit for
        # a crash and count the jobs as lost.
        if self.release_at_exit or self._failure is not None or not self._stop.is_set():
            self.release_inflight()
        self._hb_stop.set()

    def _give_back(self, jobs: list[Job], now: float) -> int:
        released = 0
        for job in jobs:
            try:
                if self.spooler.backend.release(job.id, job.lease or "", now=now):
                    released += 1
            except BackendUnavailable:
                log.warning("job %s: could not release its lease; it runs again after it "
                            "expires", job.id)
        self._forget([(job, "released", 0.0) for job in jobs])
        return released

    def release_inflight(self) -> int:
        """Give back the leases of jobs still held, so they run again elsewhere now."""
        held = self.inflight()
        released = self._give_back(held, self.spooler.clock.now())
        for job in held:
            log.info("job %s (%s): lease released at shutdown", job.id, job.task)
        return released

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.spooler.heartbeat):
            self.heartbeat()

    def heartbeat(self, now: float | None = None) -> None:
        """Extend the leases of every held job; pass cancellation requests to running ones."""
        with self._lock:
            held = dict(self._held)
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
                with self._lock:
                    # its outcome was stored meanwhile (an ack batch, a retry): not lost
                    stored = jid not in self._held or jid in self._committing
                if not stored:
                    log.warning("job %s: lease_lost (rescued elsewhere)", jid)


def _kind(outcome: Outcome) -> str:
    if isinstance(outcome, Complete):
        return "succeeded"
    if isinstance(outcome, Cancelled):
        return "cancelled"
    if isinstance(outcome, RetryAt):
        return "retry"
    return "failed"
