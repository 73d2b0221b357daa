"""Inline (eager) mode as a backend: a job runs in the caller as soon as it is due.

It stores jobs like the memory backend and then runs what is due through the
same executor a worker uses, after the payload's real serialize round trip,
so a test fails where production would. Jobs scheduled for later wait for
``spooler.drain()`` (with a fake clock moved forward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..job import Job
from .memory import MemoryBackend


class InlineBackend(MemoryBackend):
    """``Spooler("inline://")``: runs jobs inside ``.spool()``."""

    def __init__(self, url: str = "inline://", *, runner: Callable[[Job], None]) -> None:
        super().__init__(url)
        self._runner = runner

    def enqueue(self, job: Job, *, now: float) -> Job:
        stored = super().enqueue(job, now=now)
        if stored.id == job.id and job.run_at <= now:
            self._runner(stored)
        return stored

    def enqueue_many(self, jobs: Sequence[Job], *, now: float) -> list[Job]:
        stored = super().enqueue_many(jobs, now=now)
        for job in stored:
            if job.run_at <= now:
                self._runner(job)
                break  # one drain runs every due job of the queue
        return stored
