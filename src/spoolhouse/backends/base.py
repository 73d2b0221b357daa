"""The backend contract.

A backend stores :class:`~spoolhouse.job.Job` records: opaque payload bytes
plus indexed metadata. It never imports the serializer or the task registry.
Its public methods are the allowed state transitions; each docstring states the
precondition and the effect, and ``tests/contract`` checks every backend
against them. Every method that decides "due" or "expired" takes ``now``.

Fencing: ``claim`` gives each attempt a fresh lease token. Every transition of
a running job takes that token and does nothing (returns ``False`` or
``LeaseState.LOST``) when the job's current token differs, so a stale worker
whose lease was rescued cannot complete, retry or fail the job.

Errors: a backend that cannot be reached within its bounded time raises
:class:`~spoolhouse.errors.BackendUnavailable` (or ``EnqueueTimeout``), and
``StorageFull`` when its storage refuses the write. A failed write stores
nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..job import Job


class LeaseState(enum.StrEnum):
    """What a heartbeat or progress report learns about a lease."""

    HELD = "held"  # the lease is ours and was extended
    ABORT = "abort"  # still ours, but cancellation was requested
    LOST = "lost"  # the job was rescued, finished or deleted; stop reporting


class CancelResult(enum.StrEnum):
    """What :meth:`Backend.cancel` did."""

    CANCELLED = "cancelled"  # was pending; it will never run
    ABORTING = "aborting"  # was running; the worker was asked to abort cooperatively
    NOOP = "noop"  # already final, or no such job


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskLimit:
    """Limits on one task, enforced by :meth:`Backend.claim` across every worker.

    ``concurrency``: at most this many jobs of the task running at once.
    ``rate`` per ``per`` seconds: at most this many jobs of the task whose latest
    attempt started within the last ``per`` seconds (a job retried within the
    window counts once).

    Which starts a rate counts: a backend may count only the starts made by
    claims that passed this task a rate (Redis does: it keeps no record of
    starts for tasks without one, about 130 MB per million jobs kept); the
    memory and SQLite backends count every start, which is stricter. The two
    agree whenever every claim passes the same limits, as the workers of one
    app do (see ``docs/scheduling.md``: run the same code on every worker).
    """

    concurrency: int | None = None
    rate: int | None = None
    per: float = 1.0


@runtime_checkable
class Backend(Protocol):
    """Storage for jobs. Implementations: memory, sqlite, redis."""

    #: the URL this backend was opened from, with any password masked
    url: str

    # -- producer ---------------------------------------------------------------
    def enqueue(self, job: Job, *, now: float) -> Job:
        """Store ``job`` durably and return the stored record.

        Precondition: ``job.state`` is pending, ``job.attempt`` is 0.
        When ``job.key`` is set and a job with the same key is live (pending
        or running) or succeeded and not yet expired (``expires_at`` is None
        or later than ``now``), nothing is stored and that existing job is
        returned; callers compare ids to tell. Failed and cancelled jobs do
        not hold their key. Enqueueing an id that is already stored changes
        nothing and returns the stored job (a producer may retry safely). Returns only after the write is durable, and
        wakes idle workers of ``job.queue``.
        """
        ...

    def enqueue_many(self, jobs: Sequence[Job], *, now: float) -> list[Job]:
        """Store all ``jobs`` in one transaction (all or none), in order.

        Returns the stored records in the same order, applying the unique-key
        rule of :meth:`enqueue` to each (also between jobs of the batch).

        Optional companion, not part of this protocol: ``enqueue_batch(batch,
        *, now) -> None`` stores a :class:`~spoolhouse.job.JobBatch` whose
        template has no key exactly as ``enqueue_many(batch.jobs(), now=now)``
        would, without building a ``Job`` per entry; each job is then stored
        under its own id (or already was). ``spool_many`` uses it when the
        backend has it and no ``job_spooled`` receiver needs the records, so a
        subclass that changes ``enqueue_many`` must change ``enqueue_batch`` too.
        """
        ...

    # -- worker -----------------------------------------------------------------
    def claim(
        self,
        queues: Sequence[str],
        *,
        worker_id: str,
        now: float,
        lease: float,
        limit: int = 1,
        limits: Mapping[str, TaskLimit] | None = None,
    ) -> list[Job]:
        """Atomically move up to ``limit`` due jobs to running and return them.

        Due: pending with ``run_at <= now``. Queues are served in the order
        given (a job of ``queues[0]`` before any of ``queues[1]``); within a
        queue, higher ``priority`` first, then older ``run_at``, then id.
        ``limits`` maps task names to :class:`TaskLimit`: jobs of a task at its
        limit are skipped (they wait; later jobs of other tasks are claimed),
        and one claim never takes more than the task's remaining allowance.
        Each claimed job gets ``attempt + 1``, ``started_at = now``,
        ``worker_id``, a fresh lease token and ``lease_expires_at = now + lease``.
        A job is never claimed by two callers.
        """
        ...

    def extend_leases(
        self, leases: Mapping[str, str], *, now: float, lease: float
    ) -> dict[str, LeaseState]:
        """Heartbeat: for each ``job_id -> token`` held, push expiry to ``now + lease``.

        Returns the state of every lease asked about: HELD, ABORT (extended,
        but cancel was requested) or LOST (token no longer current).
        """
        ...

    def set_progress(self, job_id: str, token: str, progress: str) -> LeaseState:
        """Record ``progress`` (JSON text) for the running job held with ``token``."""
        ...

    def complete(
        self,
        job_id: str,
        token: str,
        *,
        now: float,
        result: bytes | None,
        expires_at: float | None,
    ) -> bool:
        """running → succeeded. Stores ``result``; the job may be pruned after ``expires_at``.

        Returns ``False`` (and changes nothing) when ``token`` is not current.
        """
        ...

    def complete_many(
        self, items: Sequence[tuple[str, str, bytes | None, float | None]], *, now: float
    ) -> list[bool]:
        """:meth:`complete` for each ``(job_id, token, result, expires_at)``, in one transaction.

        Returns one flag per item, as :meth:`complete` would. Workers batch
        their acknowledgements through this; a batch is durable as a whole.

        Optional companion, not part of this protocol: ``complete_and_claim(acks,
        queues, *, worker_id, now, lease, limit, limits) -> (flags, jobs)``, the
        two calls in one transaction (all or nothing). A worker that finds it
        on its backend records the successes it has buffered with its next
        claim (the SQLite backend has it: one write transaction instead of two).
        """
        ...

    def retry(
        self,
        job_id: str,
        token: str,
        *,
        now: float,
        run_at: float,
        error: str,
        count: bool = True,
    ) -> bool:
        """running → pending at ``run_at``, keeping ``error`` as the last error.

        With ``count=False`` the attempt is given back (``attempt - 1``).
        Returns ``False`` when ``token`` is not current.
        """
        ...

    def fail(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        """running → failed (dead letter) with ``error``. ``False`` when ``token`` is not current."""
        ...

    def abort(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        """running → cancelled: the task stopped because cancellation was requested.

        ``False`` when ``token`` is not current.
        """
        ...

    def release(self, job_id: str, token: str, *, now: float) -> bool:
        """running → pending, attempt given back: the worker stopped before finishing.

        Used at shutdown so that another worker runs the job at once instead
        of waiting for the lease to expire. ``run_at`` is kept (it is in the
        past: the job was due when claimed), so the job is due now and keeps
        its place ahead of younger jobs. ``False`` when ``token`` is not current.
        """
        ...

    def rescue(
        self,
        job_id: str,
        token: str,
        *,
        now: float,
        max_lost: int,
        error: str,
        expires_at: float | None = None,
    ) -> Job | None:
        """The worker holding ``token`` died: running → pending, or → failed.

        ``lost`` is incremented; the job fails (reason in ``error``, pruned
        after ``expires_at``) when ``attempt >= max_attempts`` or
        ``lost >= max_lost``, else it is pending and due now. Returns the new
        record, or ``None`` when ``token`` is not current.
        """
        ...

    def rescue_expired(
        self, *, now: float, max_lost: int, error: str, expires_at: float | None = None
    ) -> list[Job]:
        """Apply :meth:`rescue` to every running job whose lease expired before ``now``."""
        ...

    def next_due(self, queues: Sequence[str], *, now: float) -> float | None:
        """Earliest ``run_at`` of a pending job in ``queues`` (may be <= now), or ``None``."""
        ...

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when a job is enqueued to ``queues``.

        May return early spuriously; callers re-check with :meth:`claim`.
        """
        ...

    # -- periodic tasks -----------------------------------------------------------
    def schedule_tick(self, name: str, tick: float, job: Job, *, now: float) -> Job | None:
        """Enqueue ``job`` as the run of schedule ``name`` for ``tick``, at most once.

        Atomically: when no tick is recorded for ``name``, or ``tick`` is later
        than the recorded one, or the recorded one is later than ``now`` (the
        clock was set back), record ``tick`` and enqueue ``job`` (with the
        rules of :meth:`enqueue`), returning the stored job. Otherwise change
        nothing and return ``None``. Many schedulers may call this for the
        same tick; exactly one enqueues.
        """
        ...

    def schedule_ticks(self) -> dict[str, float]:
        """The last recorded tick of every schedule."""
        ...

    # -- operator ---------------------------------------------------------------
    def cancel(self, job_id: str, *, now: float) -> CancelResult:
        """pending → cancelled; running → abort requested; otherwise nothing."""
        ...

    def requeue(self, job_id: str, *, now: float) -> bool:
        """failed or cancelled → pending, due now, with attempts and losses reset.

        ``False`` when the job is in another state, missing, or its unique key
        is now taken by another live job.
        """
        ...

    def prune(self, *, now: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` final jobs whose ``expires_at <= now``; return how many."""
        ...

    def purge(
        self, *, states: Sequence[str], queue: str | None = None, before: float | None = None
    ) -> int:
        """Delete jobs in final ``states`` (optionally of ``queue``, finished before ``before``)."""
        ...

    def delete(self, job_ids: Sequence[str]) -> int:
        """Delete the listed jobs that are in a final state; return how many.

        Pending and running jobs are never deleted here (cancel them first).
        """
        ...

    # -- inspection -------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        """The job with ``job_id``, or ``None``."""
        ...

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[Job]:
        """Jobs newest first (by id), filtered; ``cursor`` is the last id of the previous page."""
        ...

    def stats(self, *, since: float) -> list[tuple[float, int, int, int]]:
        """Outcomes per minute from ``since`` on: ``(minute start, succeeded, failed, retried)``.

        Counted by the transitions themselves (``complete``; ``fail``, and a
        ``rescue`` that fails; ``retry``), in the minute of their ``now``,
        sorted by minute; minutes with no outcome are left out. A backend keeps
        at least the last 24 hours.
        """
        ...

    def counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {stored state: count}}`` for every queue holding jobs."""
        ...

    def close(self) -> None:
        """Release connections and sockets. The backend may be reopened by using it again."""
        ...
