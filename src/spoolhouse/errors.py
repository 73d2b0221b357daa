"""Exceptions and control-flow signals.

Every message says what to do about it. Errors raised at the call site of
``.spool()`` are raised before anything is written.
"""

from __future__ import annotations

import math


class SpoolhouseError(Exception):
    """Base class of every error Spoolhouse raises."""


class ConfigurationError(SpoolhouseError):
    """The spooler, a task or a backend URL is set up wrongly."""


class SerializationError(SpoolhouseError, TypeError):
    """An argument or result cannot be stored. ``path`` names where (``kwargs['user']``)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PayloadTooLarge(SpoolhouseError, ValueError):
    """The serialized arguments exceed the spooler's ``max_payload`` limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"job payload is {size} bytes, over the limit of {limit} bytes; store large data "
            "elsewhere (a file, a database row) and pass its reference, or raise "
            "Spooler(max_payload=...)"
        )
        self.size = size
        self.limit = limit


class UnknownTask(SpoolhouseError, LookupError):
    """A task name is not in this process's registry."""


class BackendUnavailable(SpoolhouseError):
    """The backend did not answer within the bounded time, or refused the write.

    Nothing was stored when ``.spool()`` raises this.
    """


class EnqueueTimeout(BackendUnavailable, TimeoutError):
    """The backend was busy or unreachable for longer than the enqueue timeout."""


class StorageFull(BackendUnavailable):
    """The backend's storage is full; nothing was stored."""


class QueueFull(SpoolhouseError):
    """A queue reached its ``max_depth``; the job was not stored."""


class LeaseLost(SpoolhouseError):
    """This worker's lease on a job was taken over; its outcome was not recorded."""


class JobFailed(SpoolhouseError):
    """The job ended in ``failed``. Carries the remote exception's type, message and traceback."""

    def __init__(
        self, job_id: str, exc_type: str, message: str, traceback: str, reason: str = "error"
    ) -> None:
        super().__init__(f"job {job_id} failed ({reason}): {exc_type}: {message}")
        self.job_id = job_id
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback
        self.reason = reason


class JobCancelled(SpoolhouseError):
    """The job was cancelled, so it has no result."""


class Retry(Exception):  # noqa: N818 - a signal, named for what the task says
    """Raise inside a task to run it again later.

    ``delay`` (seconds) overrides the task's backoff for this retry. The retry
    counts against the task's ``retries`` unless ``count=False``.
    """

    def __init__(self, delay: float | None = None, *, count: bool = True, reason: str = "") -> None:
        if delay is not None and (
            not isinstance(delay, int | float) or math.isnan(delay) or delay < 0
        ):
            raise ValueError("Retry(delay=...) takes a number of seconds >= 0")
        super().__init__(reason or (f"retry in {delay}s" if delay is not None else "retry"))
        self.delay = None if delay is None else float(delay)
        self.count = count


class Abort(Exception):  # noqa: N818 - a signal
    """Raised inside a task (by ``current_job().progress()``) when cancellation was requested."""
