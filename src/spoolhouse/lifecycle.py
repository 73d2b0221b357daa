"""What happens after an attempt: the pure rules.

No I/O, no clock reads: every function takes ``now`` and returns an outcome
that the worker applies to the backend with its lease token.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from .job import Job
from .retry import RetryPolicy

#: How long a job naming a task this worker does not know is kept retrying,
#: so a worker that deploys later still picks it up (rolling deploys).
UNKNOWN_TASK_GRACE = 600.0
#: Wait between checks of a job whose task is unknown here.
UNKNOWN_TASK_RECHECK = 30.0


@dataclass(frozen=True, slots=True)
class Complete:
    """The task returned."""

    result: bytes | None  # serialized return value, or None when not kept
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Run again at ``run_at``."""

    run_at: float
    error: str
    count: bool = True  # False gives the attempt back (the job was not at fault)


@dataclass(frozen=True, slots=True)
class Fail:
    """Move to the dead-letter state."""

    error: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The task stopped because cancellation was requested."""

    error: str
    expires_at: float | None


Outcome = Complete | RetryAt | Fail | Cancelled


def error_text(
    reason: str, exc_type: str = "", message: str = "", traceback: str = ""
) -> str:
    """The JSON stored in ``Job.error``."""
    return json.dumps(
        {"reason": reason, "type": exc_type, "message": message, "traceback": traceback}
    )


def parse_error(text: str | None) -> dict[str, str]:
    """Read ``Job.error`` back; tolerate rows written by hand or by older versions."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {"reason": "error", "type": "", "message": text, "traceback": ""}
    if not isinstance(data, dict):
        return {"reason": "error", "type": "", "message": text, "traceback": ""}
    return {str(k): str(v) for k, v in data.items()}


def after_error(
    job: Job,
    *,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    error: str,
    retryable: bool,
    delay: float | None = None,
    failed_ttl: float | None,
) -> Outcome:
    """An attempt raised: retry with backoff while attempts are left, else fail.

    ``delay`` (from ``Retry(delay=...)``) replaces the backoff.
    """
    if retryable and job.attempt < job.max_attempts:
        wait = policy.delay(job.attempt, rng) if delay is None else delay
        return RetryAt(run_at=now + wait, error=error)
    return Fail(error=error, expires_at=_expiry(now, failed_ttl))


def after_unknown_task(job: Job, *, now: float, failed_ttl: float | None) -> Outcome:
    """The job's task is not registered here: keep it for a later deploy, then fail."""
    error = error_text(
        "unknown_task",
        "UnknownTask",
        f"no task named {job.task!r} is registered in this worker; deploy the code that "
        "defines it, or requeue the job once a worker knows it",
    )
    if now - job.created_at < UNKNOWN_TASK_GRACE:
        return RetryAt(run_at=now + UNKNOWN_TASK_RECHECK, error=error, count=False)
    return Fail(error=error, expires_at=_expiry(now, failed_ttl))


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl
