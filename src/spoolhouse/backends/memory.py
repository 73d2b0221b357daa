"""The reference backend: everything in a dict, guarded by one lock.

Used by tests and by ``Spooler("memory://")``. It is the plainest reading of
the contract in :mod:`spoolhouse.backends.base`; when in doubt about a rule,
this file is the executable statement of it. Not durable and not shared across
processes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from ..job import FINAL_STATES, LIVE_STATES, Job, JobState
from .base import CancelResult, LeaseState, TaskLimit


def new_token() -> str:
    """A fresh lease (fencing) token."""
    return os.urandom(8).hex()


class MemoryBackend:
    """In-process backend. Thread-safe; one instance per process."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._jobs: dict[str, Job] = {}
        self._ticks: dict[str, float] = {}
        self._stats: dict[int, list[int]] = {}  # minute -> [succeeded, failed, retried]
        self._lock = threading.Condition(threading.RLock())

    # -- helpers -----------------------------------------------------------------
    def _live_with_key(self, key: str) -> Job | None:
        for job in self._jobs.values():
            if job.key == key and job.state in LIVE_STATES:
                return job
        return None

    def _holding_key(self, key: str, now: float) -> Job | None:
        """The job that holds ``key``: live, or succeeded and not yet expired."""
        for job in self._jobs.values():
            if job.key != key:
                continue
            if job.state in LIVE_STATES:
                return job
            if job.state is JobState.SUCCEEDED and (job.expires_at is None or job.expires_at > now):
                return job
        return None

    def _count(self, now: float, column: int) -> None:
        minute = int(now // 60)
        self._stats.setdefault(minute, [0, 0, 0])[column] += 1

    def _held(self, job_id: str, token: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.RUNNING or job.lease != token:
            return None
        return job

    def _put_locked(self, job: Job, now: float) -> Job:
        already = self._jobs.get(job.id)
        if already is not None:
            return already
        if job.key is not None:
            existing = self._holding_key(job.key, now)
            if existing is not None:
                return existing
        self._jobs[job.id] = job
        return job

    # -- producer ----------------------------------------------------------------
    def enqueue(self, job: Job, *, now: float) -> Job:
        with self._lock:
            stored = self._put_locked(job, now)
            self._lock.notify_all()
            return stored

    def enqueue_many(self, jobs: Sequence[Job], *, now: float) -> list[Job]:
        with self._lock:
            stored = [self._put_locked(job, now) for job in jobs]
            self._lock.notify_all()
            return stored

    # -- worker ------------------------------------------------------------------
    def _allowance(self, limits: Mapping[str, TaskLimit], now: float) -> dict[str, int]:
        """How many more jobs of each limited task may start now."""
        allowance: dict[str, int] = {}
        for task, rule in limits.items():
            left = limit_max = 1 << 62
            if rule.concurrency is not None:
                running = sum(
                    1 for j in self._jobs.values() if j.task == task and j.state is JobState.RUNNING
                )
                left = min(left, rule.concurrency - running)
            if rule.rate is not None:
                started = sum(
                    1
                    for j in self._jobs.values()
                    if j.task == task and j.started_at is not None and j.started_at > now - rule.per
                )
                left = min(left, rule.rate - started)
            if left < limit_max:
                allowance[task] = max(left, 0)
        return allowance

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
        claimed: list[Job] = []
        with self._lock:
            allowance = self._allowance(limits, now) if limits else {}
            for queue in queues:
                if len(claimed) >= limit:
                    break
                due = [
                    j
                    for j in self._jobs.values()
                    if j.queue == queue
                    and j.state is JobState.PENDING
                    and j.run_at <= now
                    and allowance.get(j.task, 1) > 0
                ]
                due.sort(key=lambda j: (-j.priority, j.run_at, j.id))
                for job in due:
                    if len(claimed) >= limit:
                        break
                    if job.task in allowance:
                        if allowance[job.task] <= 0:
                            continue
                        allowance[job.task] -= 1
                    running = job.replace(
                        state=JobState.RUNNING,
                        attempt=job.attempt + 1,
                        started_at=now,
                        worker_id=worker_id,
                        lease=new_token(),
                        lease_expires_at=now + lease,
                    )
                    self._jobs[job.id] = running
                    claimed.append(running)
        return claimed

    def extend_leases(
        self, leases: Mapping[str, str], *, now: float, lease: float
    ) -> dict[str, LeaseState]:
        out: dict[str, LeaseState] = {}
        with self._lock:
            for job_id, token in leases.items():
                job = self._held(job_id, token)
                if job is None:
                    out[job_id] = LeaseState.LOST
                    continue
                self._jobs[job_id] = job.replace(lease_expires_at=now + lease)
                out[job_id] = LeaseState.ABORT if job.abort_requested else LeaseState.HELD
        return out

    def set_progress(self, job_id: str, token: str, progress: str) -> LeaseState:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return LeaseState.LOST
            self._jobs[job_id] = job.replace(progress=progress)
            return LeaseState.ABORT if job.abort_requested else LeaseState.HELD

    def _finish(
        self, job_id: str, token: str, state: JobState, *, now: float, **fields: Any
    ) -> bool:
        """running → a final ``state``, fenced by ``token`` (lock held by the caller)."""
        job = self._held(job_id, token)
        if job is None:
            return False
        self._jobs[job_id] = job.replace(
            state=state, finished_at=now, lease=None, lease_expires_at=None, **fields
        )
        return True

    def complete(
        self, job_id: str, token: str, *, now: float, result: bytes | None, expires_at: float | None
    ) -> bool:
        with self._lock:
            done = self._finish(job_id, token, JobState.SUCCEEDED, now=now, result=result,
                                expires_at=expires_at)
            if done:
                self._count(now, 0)
            return done

    def complete_many(
        self, items: Sequence[tuple[str, str, bytes | None, float | None]], *, now: float
    ) -> list[bool]:
        with self._lock:
            return [
                self.complete(job_id, token, now=now, result=result, expires_at=expires_at)
                for job_id, token, result, expires_at in items
            ]

    def retry(
        self, job_id: str, token: str, *, now: float, run_at: float, error: str, count: bool = True
    ) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            self._count(now, 2)
            self._jobs[job_id] = job.replace(
                state=JobState.PENDING,
                run_at=run_at,
                error=error,
                attempt=job.attempt if count else job.attempt - 1,
                lease=None,
                lease_expires_at=None,
                worker_id=None,
            )
            self._lock.notify_all()
            return True

    def fail(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        with self._lock:
            done = self._finish(job_id, token, JobState.FAILED, now=now, error=error,
                                expires_at=expires_at)
            if done:
                self._count(now, 1)
            return done

    def abort(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        with self._lock:
            return self._finish(job_id, token, JobState.CANCELLED, now=now, error=error,
                                expires_at=expires_at)

    def release(self, job_id: str, token: str, *, now: float) -> bool:
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return False
            self._jobs[job_id] = job.replace(
                state=JobState.PENDING,
                attempt=job.attempt - 1,
                lease=None,
                lease_expires_at=None,
                worker_id=None,
            )
            self._lock.notify_all()
            return True

    def _rescue_locked(
        self, job: Job, *, now: float, max_lost: int, error: str, expires_at: float | None
    ) -> Job:
        lost = job.lost + 1
        if job.attempt >= job.max_attempts or lost >= max_lost:
            self._count(now, 1)
            new = job.replace(
                state=JobState.FAILED,
                lost=lost,
                error=error,
                finished_at=now,
                expires_at=expires_at,
                lease=None,
                lease_expires_at=None,
            )
        else:
            new = job.replace(
                state=JobState.PENDING,
                lost=lost,
                error=error,
                lease=None,
                lease_expires_at=None,
                worker_id=None,
            )
        self._jobs[job.id] = new
        return new

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
        with self._lock:
            job = self._held(job_id, token)
            if job is None:
                return None
            new = self._rescue_locked(
                job, now=now, max_lost=max_lost, error=error, expires_at=expires_at
            )
            self._lock.notify_all()
            return new

    def rescue_expired(
        self, *, now: float, max_lost: int, error: str, expires_at: float | None = None
    ) -> list[Job]:
        with self._lock:
            expired = [
                j
                for j in self._jobs.values()
                if j.state is JobState.RUNNING
                and j.lease_expires_at is not None
                and j.lease_expires_at < now
            ]
            out = [
                self._rescue_locked(
                    j, now=now, max_lost=max_lost, error=error, expires_at=expires_at
                )
                for j in expired
            ]
            if out:
                self._lock.notify_all()
            return out

    def next_due(self, queues: Sequence[str], *, now: float) -> float | None:
        with self._lock:
            times = [
                j.run_at
                for j in self._jobs.values()
                if j.state is JobState.PENDING and j.queue in queues
            ]
        return min(times) if times else None

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        with self._lock:
            self._lock.wait(timeout)

    # -- periodic tasks ----------------------------------------------------------
    def schedule_tick(self, name: str, tick: float, job: Job, *, now: float) -> Job | None:
        with self._lock:
            last = self._ticks.get(name)
            if last is not None and tick <= last and last <= now:
                return None
            self._ticks[name] = tick
            stored = self._put_locked(job, now)
            self._lock.notify_all()
            return stored

    def schedule_ticks(self) -> dict[str, float]:
        with self._lock:
            return dict(self._ticks)

    # -- operator ----------------------------------------------------------------
    def cancel(self, job_id: str, *, now: float) -> CancelResult:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return CancelResult.NOOP
            if job.state is JobState.PENDING:
                self._jobs[job_id] = job.replace(
                    state=JobState.CANCELLED,
                    finished_at=now,
                    expires_at=None if job.result_ttl is None else now + job.result_ttl,
                )
                return CancelResult.CANCELLED
            if job.state is JobState.RUNNING:
                self._jobs[job_id] = job.replace(abort_requested=True)
                return CancelResult.ABORTING
            return CancelResult.NOOP

    def requeue(self, job_id: str, *, now: float) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in (JobState.FAILED, JobState.CANCELLED):
                return False
            if job.key is not None and self._live_with_key(job.key) is not None:
                return False
            self._jobs[job_id] = job.replace(
                state=JobState.PENDING,
                run_at=now,
                attempt=0,
                lost=0,
                finished_at=None,
                expires_at=None,
                abort_requested=False,
                worker_id=None,
            )
            self._lock.notify_all()
            return True

    def prune(self, *, now: float, limit: int = 1000) -> int:
        with self._lock:
            doomed = [
                j.id
                for j in self._jobs.values()
                if j.state in FINAL_STATES and j.expires_at is not None and j.expires_at <= now
            ][:limit]
            for job_id in doomed:
                del self._jobs[job_id]
            return len(doomed)

    def purge(
        self, *, states: Sequence[str], queue: str | None = None, before: float | None = None
    ) -> int:
        wanted = {JobState(s) for s in states} & FINAL_STATES
        with self._lock:
            doomed = [
                j.id
                for j in self._jobs.values()
                if j.state in wanted
                and (queue is None or j.queue == queue)
                and (before is None or (j.finished_at or 0.0) < before)
            ]
            for job_id in doomed:
                del self._jobs[job_id]
            return len(doomed)

    def delete(self, job_ids: Sequence[str]) -> int:
        with self._lock:
            doomed = [
                jid for jid in dict.fromkeys(job_ids)
                if jid in self._jobs and self._jobs[jid].state in FINAL_STATES
            ]
            for jid in doomed:
                del self._jobs[jid]
            return len(doomed)

    # -- inspection --------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

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
        with self._lock:
            jobs = [
                j
                for j in self._jobs.values()
                if (state is None or j.state == state)
                and (key is None or j.key == key)
                and (queue is None or j.queue == queue)
                and (task is None or j.task == task)
                and (cursor is None or j.id < cursor)
            ]
        jobs.sort(key=lambda j: j.id, reverse=True)
        return jobs[:limit]

    def stats(self, *, since: float) -> list[tuple[float, int, int, int]]:
        first = int(since // 60)
        with self._lock:
            return [
                (minute * 60.0, *counts)  # type: ignore[misc]
                for minute, counts in sorted(self._stats.items())
                if minute >= first
            ]

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for j in self._jobs.values():
                per = out.setdefault(j.queue, {})
                per[j.state.value] = per.get(j.state.value, 0) + 1
        return out

    def close(self) -> None:
        pass
