"""Supervisor: N worker processes, restarted when they die.

The parent never touches a job's code; it tracks what each child holds (from
messages the child sends on a pipe, one per claimed batch and one per batch of
outcomes) and what each of its threads is running (from a shared-memory
:class:`Slots` board the child writes and the parent reads: no message per
job), so that it can

* rescue a dead child's jobs at once (not after the lease), counting the loss
  so a job that kills its process three times ends ``failed`` (poison pill);
* kill a child whose job overran its ``timeout`` and count the attempt;
* recycle a child after ``max_tasks`` jobs;
* pass SIGTERM/SIGINT on: the first asks for a warm stop, the second a cold one;
* run maintenance: rescue expired leases (other hosts' dead workers), prune.

Children are started with the ``spawn`` method, so no connection, lock or
thread crosses a ``fork()``; each child imports the app again from ``app_ref``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from ..errors import BackendUnavailable
from ..job import Job
from ..lifecycle import Fail, RetryAt, after_error, error_text
from ..spooler import Spooler
from .scheduler import Scheduler

log = logging.getLogger("spoolhouse.supervisor")

#: extra seconds past ``shutdown_timeout`` before a child that ignores a stop is killed
KILL_GRACE = 5.0
#: a child that dies sooner than this after starting is restarted with a backoff
FAST_DEATH = 2.0
#: seconds between periodic-schedule checks: the resolution of periodic tasks
SCHEDULE_INTERVAL = 0.5
#: longest a started job with a ``timeout`` goes unnoticed by the parent, which
#: learns of starts by reading the children's slots: the precision of hard timeouts
TIMEOUT_POLL = 0.05
#: a slot's sequence number while its thread runs nothing
IDLE = -1.0
#: how often the parent reads its children's pipes. It does not sleep on them:
#: a child's message then never wakes the parent (which, on a small machine,
#: preempts the child for ~40 µs per message), and a child's death, which wakes
#: it at once through the process sentinel, is handled after draining them.
MESSAGE_POLL = 0.05
#: pipe capacity asked for, so that a child never blocks between two reads
PIPE_SIZE = 1 << 20


class Slots:
    """What each thread of a child is running, in memory shared with the parent.

    Slot ``i`` is two doubles: the sequence number of the job thread ``i``
    runs (its rank among the jobs the child announced in ``claim`` messages,
    counted from 0; :data:`IDLE` when none) and its start, ``time.monotonic()``
    (one clock for every process on the host). A thread writes the start
    first and the number second, and the parent reads the number on both
    sides of the start, so a torn read is seen and retried. Writing a slot is
    a memory store: a job costs no message to the parent.
    """

    def __init__(self, ctx: Any, threads: int) -> None:
        self.threads = threads
        self.array: Any = ctx.RawArray("d", [IDLE, 0.0] * threads)

    def write(self, index: int, seq: int, started: float) -> None:
        self.array[2 * index + 1] = started
        self.array[2 * index] = float(seq)

    def clear(self, index: int) -> None:
        self.array[2 * index] = IDLE

    def read(self) -> list[tuple[int, float]]:
        """``(seq, started)`` of every busy slot."""
        busy = []
        for index in range(self.threads):
            while True:
                seq = self.array[2 * index]
                started = self.array[2 * index + 1]
                if self.array[2 * index] == seq:
                    break
            if seq != IDLE:
                busy.append((int(seq), started))
        return busy


@dataclass
class Running:
    job_id: str
    token: str
    task: str
    timeout: float | None
    seq: int = 0  # rank among the child's claimed jobs (see Slots)
    started: float | None = None  # monotonic; None while claimed but not started
    ran: bool = False  # finished executing; its ack may still be buffered in the child


@dataclass
class Child:
    index: int
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    started: float  # monotonic
    slots: Slots
    running: dict[str, Running] = field(default_factory=dict)  # every job it holds
    by_seq: dict[int, Running] = field(default_factory=dict)
    claims: int = 0  # jobs announced so far: the next job's seq
    timed_out: bool = False
    stop_sent: int = 0


@dataclass(frozen=True)
class WorkerConfig:
    """What each child needs; pickled to the spawned process."""

    app_ref: str
    queues: tuple[str, ...] | None = None
    threads: int = 1
    max_tasks: int | None = None
    shutdown_timeout: float = 30.0
    burst: bool = False
    log_level: int | None = None
    log_format: str = "text"


class Supervisor:
    """Runs ``processes`` worker processes for the spooler at ``config.app_ref``."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        processes: int = 2,
        maintenance_interval: float = 5.0,
        spooler: Spooler | None = None,
        health_file: str | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        from ..loader import load_spooler

        self.config = config
        self.processes = processes
        self.spooler = spooler or load_spooler(config.app_ref)
        self.maintenance_interval = maintenance_interval
        self.children: dict[int, Child] = {}
        self.stopping = 0  # 0 running, 1 warm stop, 2 cold stop
        self.stop_deadline: float | None = None
        self.restarts = 0
        self._restart_at: dict[int, float] = {}
        self._fast_deaths: dict[int, int] = {}
        self._next_maintenance = 0.0
        self._next_schedule = 0.0
        self.scheduler = Scheduler(self.spooler)
        self._ctx = multiprocessing.get_context("spawn")
        self._rng = random.Random()
        self._signals: list[int] = []
        self.health_file = health_file
        self._next_health = 0.0
        #: called as ``listener(task, queue, kind, duration)`` for every outcome a
        #: child records (kind: succeeded, retry, failed, cancelled); metrics use it
        self.listeners: list[Callable[[str, str, str, float], None]] = []

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        for index in range(self.processes):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        parent, child = self._ctx.Pipe(duplex=False)
        with contextlib.suppress(OSError, AttributeError):  # Linux only; a hint
            fcntl.fcntl(parent.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        slots = Slots(self._ctx, self.config.threads)
        process = self._ctx.Process(
            target=child_main, args=(self.config, child, slots),
            name=f"spoolhouse-worker-{index}", daemon=False,
        )
        process.start()
        child.close()
        self.children[index] = Child(index, process, parent, time.monotonic(), slots)
        log.info("spawned spoolhouse worker %d (pid: %s)", index, process.pid)

    def stop(self, *, cold: bool = False) -> None:
        """Ask children to stop: warm (finish running jobs) or cold (release them now)."""
        level = 2 if cold else 1
        if self.stopping >= level:
            return
        self.stopping = level
        if self.stop_deadline is None:
            self.stop_deadline = time.monotonic() + self.config.shutdown_timeout + KILL_GRACE
        for child in self.children.values():
            self._signal_child(child, level)

    def _signal_child(self, child: Child, level: int) -> None:
        # SIGTERM asks a child for a warm stop and SIGUSR1 for a cold one. A
        # child never counts SIGTERMs: one sent to the whole process group
        # (Ctrl-C, killpg) reaches it directly as well as through us, and must
        # not turn a warm stop cold.
        while child.stop_sent < level and child.process.is_alive():
            child.stop_sent += 1
            signum = signal.SIGTERM if child.stop_sent == 1 else signal.SIGUSR1
            try:
                os.kill(child.process.pid, signum)
            except ProcessLookupError:
                break

    @property
    def done(self) -> bool:
        return not self.children and (self.stopping > 0 or self.config.burst)

    def run(self) -> int:
        """Start the children and supervise until stopped (or, in burst mode, drained)."""
        self._install_signals()
        self.start()
        try:
            while not self.done:
                self.tick()
        finally:
            self._kill_all()
        return 0

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: Any) -> None:
            self._signals.append(signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # -- one step ------------------------------------------------------------------
    def tick(self, timeout: float = 1.0) -> None:
        """Handle messages, deaths, overruns, signals, restarts and maintenance once."""
        while self._signals:
            signum = self._signals.pop(0)
            cold = self.stopping >= 1
            log.info("received %s: %s stop", signal.Signals(signum).name, "cold" if cold else "warm")
            self.stop(cold=cold)
        now_mono = time.monotonic()
        sentinels = [child.process.sentinel for child in self.children.values()]
        wake = min(timeout, self._time_to_next_event(now_mono), MESSAGE_POLL)
        if sentinels:
            wait(sentinels, timeout=max(wake, 0.0))
        elif wake > 0:
            time.sleep(wake)
        for child in list(self.children.values()):
            self._read_messages(child)
            self._read_slots(child)
        for child in list(self.children.values()):
            if not child.process.is_alive():
                child.process.join()
                self._read_messages(child)
                self._read_slots(child)
                self._on_exit(child)
        self._enforce_timeouts()
        self._enforce_stop_deadline()
        self._restart_due()
        if time.monotonic() >= self._next_maintenance:
            self.maintenance()
        if not self.stopping and time.monotonic() >= self._next_schedule:
            self.schedule()
        if self.health_file and time.monotonic() >= self._next_health:
            self.write_health()

    def _time_to_next_event(self, now: float) -> float:
        times = [self._next_maintenance - now]
        if self.spooler.schedules:
            times.append(self._next_schedule - now)
        for child in self.children.values():
            for r in child.running.values():
                if r.timeout is None or r.ran:
                    continue
                if r.started is None:
                    # it may start any moment, and only the slots would tell
                    times.append(TIMEOUT_POLL)
                else:
                    times.append(min(r.started + r.timeout - now, TIMEOUT_POLL))
        times.extend(t - now for t in self._restart_at.values())
        if self.stop_deadline is not None:
            times.append(self.stop_deadline - now)
        return max(min(times), 0.0)

    def _read_messages(self, child: Child) -> None:
        try:
            while child.conn.poll():
                message = child.conn.recv()
                kind = message[0]
                if kind == "claim":
                    for job_id, token, task, timeout in message[1]:
                        claimed = Running(job_id, token, task, timeout, seq=child.claims)
                        child.claims += 1
                        child.running[job_id] = claimed
                        child.by_seq[claimed.seq] = claimed
                elif kind == "done":
                    for job_id, task, queue, outcome, duration in message[1]:
                        finished = child.running.pop(job_id, None)
                        if finished is not None:
                            child.by_seq.pop(finished.seq, None)
                        if outcome != "released":
                            self._notify(task, queue, outcome, duration)
        except (EOFError, OSError):
            pass

    @staticmethod
    def _read_slots(child: Child) -> None:
        """Mark the child's jobs started or ran from what its threads' slots show now.

        Read after the pipe is drained: a thread writes its slot only after the
        claim message naming the job was sent, so every seq found is known.
        A job seen running and no longer in any slot has ran; one that started
        and finished between two reads is never seen, and counts as not started
        (both are given back, not counted as lost, if the child dies).
        """
        busy = dict(child.slots.read())
        for r in child.by_seq.values():
            if r.started is not None and not r.ran and r.seq not in busy:
                r.ran = True
        for seq, started in busy.items():
            job = child.by_seq.get(seq)
            if job is not None and job.started is None:
                job.started = started

    def _notify(self, task: str, queue: str, outcome: str, duration: float) -> None:
        for listener in self.listeners:
            try:
                listener(task, queue, outcome, duration)
            except Exception:
                log.exception("a supervisor listener raised; ignored")

    def _on_exit(self, child: Child) -> None:
        del self.children[child.index]
        code = child.process.exitcode
        child.conn.close()
        now = self.spooler.clock.now()
        backend = self.spooler.backend
        if child.running and not child.timed_out:
            error = error_text(
                "worker_lost", "WorkerLost",
                f"worker process {child.process.pid} exited with code {code} while running "
                "this job",
            )
            for r in child.running.values():
                try:
                    if r.started is None or r.ran or self.stopping:
                        # claimed ahead but never started, or finished with its ack still
                        # buffered: not the job's fault; it runs again (at most once more).
                        # A stopping child leaves the jobs it still ran past its shutdown
                        # timeout to us: given back now that it is gone, they cannot
                        # still be finishing there while they run elsewhere.
                        if backend.release(r.job_id, r.token, now=now) and self.stopping:
                            log.info("job %s (%s): lease released at shutdown", r.job_id,
                                     r.task)
                        continue
                    rescued = backend.rescue(
                        r.job_id, r.token, now=now, max_lost=self.spooler.max_lost,
                        error=error, expires_at=self._failed_expiry(now),
                    )
                except BackendUnavailable as exc:
                    log.warning("job %s: store unavailable (%s); its lease expires and a "
                                "maintenance pass rescues it", r.job_id, exc)
                    continue
                if rescued is not None:
                    log.warning("job %s (%s): worker %s died (exit %s); job is now %s",
                                r.job_id, r.task, child.process.pid, code, rescued.state.value)
                    lost_for = time.monotonic() - (r.started or time.monotonic())
                    self._notify(rescued.task, rescued.queue,
                                 "failed" if rescued.state == "failed" else "retry", lost_for)
        if self.stopping:
            return
        if self.config.burst and code == 0:
            return
        if code != 0:
            log.warning("spoolhouse worker %d (pid %s) exited with code %s; restarting",
                        child.index, child.process.pid, code)
        lived = time.monotonic() - child.started
        if lived < FAST_DEATH and code != 0:
            n = self._fast_deaths.get(child.index, 0) + 1
            self._fast_deaths[child.index] = n
            self._restart_at[child.index] = time.monotonic() + min(0.5 * 2 ** (n - 1), 30.0)
        else:
            self._fast_deaths.pop(child.index, None)
            self._restart_at[child.index] = time.monotonic()

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, at in list(self._restart_at.items()):
            if self.stopping:
                self._restart_at.clear()
                return
            if at <= now:
                del self._restart_at[index]
                self.restarts += 1
                self._spawn(index)

    def _enforce_timeouts(self) -> None:
        now_mono = time.monotonic()
        for child in list(self.children.values()):
            overdue = [
                r for r in child.running.values()
                if r.timeout is not None and r.started is not None and not r.ran
                and now_mono - r.started > r.timeout
            ]
            if not overdue or child.timed_out:
                continue
            child.timed_out = True
            log.error("job %s (%s) overran its timeout of %ss; killing worker pid %s",
                      overdue[0].job_id, overdue[0].task, overdue[0].timeout, child.process.pid)
            child.process.kill()
            child.process.join()
            self._read_messages(child)
            self._read_slots(child)
            now = self.spooler.clock.now()
            backend = self.spooler.backend
            for r in child.running.values():
                try:
                    if r in overdue:
                        self._record_timeout(r, now)
                    else:
                        backend.release(r.job_id, r.token, now=now)
                except BackendUnavailable as exc:
                    log.warning("job %s: store unavailable (%s); its lease expires and a "
                                "maintenance pass rescues it", r.job_id, exc)
            child.running.clear()
            child.by_seq.clear()

    def _record_timeout(self, r: Running, now: float) -> None:
        backend = self.spooler.backend
        job = backend.get(r.job_id)
        if job is None or job.lease != r.token:
            return
        error = error_text("timeout", "TimeoutError",
                           f"attempt {job.attempt} ran longer than its timeout of {r.timeout}s")
        if job.task in self.spooler.registry:
            policy = self.spooler.registry.get(job.task).config.retry
            outcome = after_error(job, now=now, policy=policy, rng=self._rng, error=error,
                                  retryable=True, failed_ttl=self.spooler.failed_ttl)
        else:
            outcome = Fail(error=error, expires_at=None)
        elapsed = time.monotonic() - (r.started or time.monotonic())
        if isinstance(outcome, RetryAt):
            if backend.retry(r.job_id, r.token, now=now, run_at=outcome.run_at, error=error):
                self._notify(job.task, job.queue, "retry", elapsed)
        else:
            assert isinstance(outcome, Fail)
            if backend.fail(r.job_id, r.token, now=now, error=error, expires_at=outcome.expires_at):
                self._notify(job.task, job.queue, "failed", elapsed)

    def _enforce_stop_deadline(self) -> None:
        if self.stop_deadline is None or time.monotonic() < self.stop_deadline:
            return
        self._kill_all()

    def _kill_all(self) -> None:
        """Kill children that are still alive and give back their jobs' leases."""
        now = self.spooler.clock.now()
        for child in list(self.children.values()):
            if child.process.is_alive():
                log.warning("killing worker pid %s that did not stop in time", child.process.pid)
                child.process.kill()
            child.process.join()
            self._read_messages(child)
            for r in child.running.values():
                try:
                    self.spooler.backend.release(r.job_id, r.token, now=now)
                except BackendUnavailable:
                    log.warning("job %s: store unavailable; its lease expires instead", r.job_id)
            child.conn.close()
            del self.children[child.index]

    def health(self) -> dict[str, Any]:
        """What the health file holds: liveness of this supervisor and its children."""
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "stopping": bool(self.stopping),
            "children": [
                {"pid": c.process.pid, "alive": c.process.is_alive(), "running": sorted(c.running)}
                for c in self.children.values()
            ],
            "processes": self.processes,
            "restarts": self.restarts,
        }

    def write_health(self) -> None:
        """Rewrite the health file atomically (about once a second)."""
        self._next_health = time.monotonic() + 1.0
        assert self.health_file is not None
        tmp = f"{self.health_file}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(self.health(), fh)
            os.replace(tmp, self.health_file)
        except OSError:
            log.exception("cannot write the health file %s", self.health_file)

    def schedule(self) -> None:
        """Enqueue due periodic ticks (about once a second, on every host)."""
        self._next_schedule = time.monotonic() + SCHEDULE_INTERVAL
        try:
            self.scheduler.tick()
        except Exception:
            log.exception("periodic scheduling failed; will try again")

    def _failed_expiry(self, now: float) -> float | None:
        ttl = self.spooler.failed_ttl
        return None if ttl is None else now + ttl

    def maintenance(self) -> None:
        """Rescue jobs whose lease expired (their worker is gone) and prune old jobs."""
        self._next_maintenance = time.monotonic() + self.maintenance_interval
        backend = self.spooler.backend
        now = self.spooler.clock.now()
        try:
            rescued = backend.rescue_expired(
                now=now, max_lost=self.spooler.max_lost,
                error=error_text("worker_lost", "WorkerLost",
                                 "the worker stopped heartbeating and its lease expired"),
                expires_at=self._failed_expiry(now),
            )
            for job in rescued:
                log.warning("job %s (%s): lease expired; now %s", job.id, job.task, job.state.value)
            backend.prune(now=now)
        except Exception:
            log.exception("maintenance failed; will try again")


# -- the child process -----------------------------------------------------------
def _stop_on_signals(worker: Any) -> None:
    """SIGTERM asks ``worker`` for a warm stop, SIGUSR1 for a cold one.

    The handler only writes the signal's number to a pipe; a thread reads it
    and calls :meth:`Worker.stop`. A handler runs on the main thread between
    two bytecodes, maybe while that thread holds the worker's lock, so one
    that took the lock itself would wait forever.
    """
    read_end, write_end = os.pipe()

    def on_signal(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(write_end, bytes([signum]))

    def relay() -> None:
        while True:
            data = os.read(read_end, 16)
            if not data:
                return
            for signum in data:
                worker.stop(hard=signum == signal.SIGUSR1)

    threading.Thread(target=relay, name="spoolhouse-signals", daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)


class _ThreadSlots:
    """The child's side of :class:`Slots`: each executor thread owns one slot."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self._seqs: dict[str, int] = {}  # claimed job id -> seq, until it starts or is done
        self._announced = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._next_slot = 0

    def claimed(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._seqs[job.id] = self._announced
                self._announced += 1

    def forget(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._seqs.pop(job.id, None)

    def start(self, job: Job) -> None:
        with self._lock:
            seq = self._seqs.pop(job.id, None)
        index = self._slot()
        if seq is not None and index is not None:
            self.slots.write(index, seq, time.monotonic())

    def idle(self) -> None:
        index = self._slot()
        if index is not None:
            self.slots.clear(index)

    def _slot(self) -> int | None:
        index: int | None = getattr(self._local, "index", None)
        if index is None:
            with self._lock:
                index = self._next_slot
                self._next_slot += 1
            self._local.index = index
        return index if index < self.slots.threads else None


def child_main(config: WorkerConfig, conn: Connection, slots: Slots) -> None:
    """Entry point of a worker process (spawned)."""
    from ..loader import load_spooler
    from .worker import Worker

    if config.log_level is not None:
        from ..cli.logs import configure_logging

        configure_logging(config.log_level, config.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor forwards Ctrl-C as SIGTERM
    spooler = load_spooler(config.app_ref)
    send_lock = threading.Lock()
    board = _ThreadSlots(slots)

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    def on_claim(jobs: list[Job]) -> None:
        board.claimed(jobs)  # numbered before any thread can start them
        send(("claim", [(j.id, j.lease, j.task, j.timeout) for j in jobs]))

    def on_done(done: list[tuple[Job, str, float]]) -> None:
        board.forget(job for job, _, _ in done)
        send(("done", [(j.id, j.task, j.queue, kind, d) for j, kind, d in done]))

    worker = Worker(
        spooler,
        queues=config.queues,
        threads=config.threads,
        max_tasks=config.max_tasks,
        on_claim=on_claim,
        on_start=lambda job, previous: board.start(job),
        on_ran=lambda job: board.idle(),
        on_done=on_done,
        release_at_exit=False,  # we exit with them; the supervisor gives them back
    )

    _stop_on_signals(worker)
    try:
        worker.run(burst=config.burst, shutdown_timeout=config.shutdown_timeout)
    finally:
        with contextlib.suppress(Exception):
            spooler.close()
        conn.close()
        # exit hooks (an OpenTelemetry span processor's flush, …): multiprocessing
        # ends a spawned child with os._exit, which would skip them
        run_exit_hooks = getattr(atexit, "_run_exitfuncs", None)
        if run_exit_hooks is not None:
            with contextlib.suppress(Exception):
                run_exit_hooks()
        logging.shutdown()
    # running threads of a cold stop must not keep the process alive
    os._exit(0)
