"""JobHandle: what ``.spool()`` returns. Looks a job up by id; holds no state of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .backends.base import CancelResult
from .context import Progress
from .errors import JobCancelled, JobFailed
from .job import Job, JobState, shown_status
from .lifecycle import parse_error

if TYPE_CHECKING:
    from .spooler import Spooler

R = TypeVar("R")


class JobHandle(Generic[R]):
    """A reference to a stored job.

    >>> job = send_email.spool("a@b.c", subject="hi")   # doctest: +SKIP
    >>> job.status()                                     # doctest: +SKIP
    'pending'
    >>> job.result(timeout=5)                            # doctest: +SKIP
    'sent'
    """

    __slots__ = ("id", "_spooler")

    def __init__(self, spooler: Spooler, job_id: str) -> None:
        self.id = job_id
        self._spooler = spooler

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def info(self) -> Job:
        """The stored record. Raises ``LookupError`` once the job was pruned or purged."""
        job = self._spooler.backend.get(self.id)
        if job is None:
            raise LookupError(
                f"job {self.id} is not in the store (never stored, or pruned after its "
                "result_ttl); raise result_ttl to keep finished jobs longer"
            )
        return job

    def status(self) -> str:
        """One of pending, scheduled, running, retrying, succeeded, failed, cancelled."""
        return shown_status(self.info(), self._spooler.clock.now())

    @property
    def progress(self) -> Progress | None:
        """The last progress the task reported, or ``None``."""
        return Progress.from_json(self.info().progress)

    @property
    def error(self) -> dict[str, str]:
        """The last error: ``reason``, ``type``, ``message``, ``traceback`` (empty if none)."""
        return parse_error(self.info().error)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job to finish and return its value.

        Raises :class:`~spoolhouse.errors.JobFailed` (with the remote exception's
        type, message and traceback) when it failed, ``JobCancelled`` when it
        was cancelled, and ``TimeoutError`` when it is not finished within
        ``timeout`` seconds (``None`` waits forever). Waiting polls the store
        with a growing interval (1 ms up to 100 ms).
        """
        job = self._spooler.wait_for(self.id, {JobState.SUCCEEDED, JobState.FAILED,
                                               JobState.CANCELLED}, timeout)
        if job.state is JobState.FAILED:
            err = parse_error(job.error)
            raise JobFailed(
                job.id,
                err.get("type", ""),
                err.get("message", ""),
                err.get("traceback", ""),
                err.get("reason", "error"),
            )
        if job.state is JobState.CANCELLED:
            raise JobCancelled(f"job {job.id} was cancelled")
        if job.result is None:
            return cast(R, None)
        return cast(R, self._spooler.serializer.loads_value(job.result))

    def cancel(self) -> bool:
        """Cancel: a pending job never runs; a running one is asked to abort.

        Returns ``True`` when the job was cancelled or an abort was requested.
        """
        outcome = self._spooler.backend.cancel(self.id, now=self._spooler.clock.now())
        return outcome is not CancelResult.NOOP

    def requeue(self) -> bool:
        """Run a failed or cancelled job again, with its attempts reset."""
        return self._spooler.backend.requeue(self.id, now=self._spooler.clock.now())


def handle_of(spooler: Spooler, job_id: str) -> JobHandle[Any]:
    return JobHandle(spooler, job_id)
