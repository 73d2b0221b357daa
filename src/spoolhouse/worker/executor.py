"""Run one claimed job and classify what happened. Shared by workers and inline mode.

Returns an :mod:`~spoolhouse.lifecycle` outcome; it never writes to the
backend itself, except progress reports through the running job.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..context import RunningJob, reset_current, set_current
from ..errors import Abort, Retry, SerializationError, UnknownTask
from ..job import Job
from ..lifecycle import (
    Cancelled,
    Complete,
    Fail,
    Outcome,
    after_error,
    after_unknown_task,
    error_text,
)
from ..serializer import BadSignature

if TYPE_CHECKING:
    from ..spooler import Spooler

log = logging.getLogger("spoolhouse.worker")

#: Longest traceback text stored with a job.
MAX_TRACEBACK = 16_000


def format_exception(exc: BaseException) -> tuple[str, str, str]:
    """``(type name, message, traceback text)`` of an exception, bounded in size."""
    exc_type = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        exc_type = f"{module}.{exc_type}"
    tb = "".join(traceback.format_exception(exc))
    if len(tb) > MAX_TRACEBACK:
        tb = "…" + tb[-MAX_TRACEBACK:]
    return exc_type, str(exc)[:2000], tb


def execute(
    spooler: Spooler,
    job: Job,
    running: RunningJob,
    *,
    now: Callable[[], float],
    rng: random.Random,
) -> Outcome:
    """Decode the job, run its task through the middleware, and decide the outcome."""
    try:
        task = spooler.registry.get(job.task)
    except UnknownTask:
        log.warning("job %s: unknown task %r", job.id, job.task)
        return after_unknown_task(job, now=now(), failed_ttl=spooler.failed_ttl)
    try:
        args, kwargs = spooler.serializer.loads_call(job.payload)
    except SerializationError as exc:
        reason = "bad_signature" if isinstance(exc, BadSignature) else "decode_error"
        log.error("job %s: cannot decode its payload (%s): %s", job.id, reason, exc)
        return Fail(
            error=error_text(reason, type(exc).__name__, str(exc)),
            expires_at=_expiry(now(), spooler.failed_ttl),
        )

    call: Callable[[], Any] | None = None
    if spooler.middleware:

        def call() -> Any:
            return task.fn(*args, **kwargs)

        for middleware in reversed(spooler.middleware):
            call = _wrap(middleware, running, call)

    token = set_current(running)
    try:
        value = task.fn(*args, **kwargs) if call is None else call()
    except Retry as exc:
        error = error_text("retry", "Retry", str(exc))
        if not exc.count:
            from ..lifecycle import RetryAt

            return RetryAt(run_at=now() + (exc.delay or 0.0), error=error, count=False)
        return after_error(
            job, now=now(), policy=task.config.retry, rng=rng, error=error, retryable=True,
            delay=exc.delay, failed_ttl=spooler.failed_ttl,
        )
    except Abort as exc:
        return Cancelled(
            error=error_text("aborted", "Abort", str(exc)),
            expires_at=_expiry(now(), job.result_ttl),
        )
    except Exception as exc:
        exc_type, message, tb = format_exception(exc)
        message, tb = _scrub(spooler, task, args, kwargs, message, tb)
        if running.should_abort():
            # cancellation was asked for: honour it rather than retry
            return Cancelled(
                error=error_text("aborted", exc_type, message, tb),
                expires_at=_expiry(now(), job.result_ttl),
            )
        log.warning("job %s (%s) attempt %d raised %s: %s", job.id, job.task, job.attempt,
                    exc_type, message)
        return after_error(
            job, now=now(), policy=task.config.retry, rng=rng,
            error=error_text("error", exc_type, message, tb),
            retryable=task.config.retry.retries_on(exc), failed_ttl=spooler.failed_ttl,
        )
    finally:
        reset_current(token)

    finished = now()
    expires = _expiry(finished, job.result_ttl)
    if not task.config.store_result or value is None:
        return Complete(result=None, expires_at=expires)
    try:
        data = spooler.serializer.dumps_value(value)
    except (SerializationError, TypeError, ValueError) as exc:
        return Fail(
            error=error_text(
                "result_error", type(exc).__name__,
                f"the task returned a value that cannot be stored: {exc}; return plain data, "
                "or pass store_result=False to @spooler.task",
            ),
            expires_at=_expiry(finished, spooler.failed_ttl),
        )
    return Complete(result=data, expires_at=expires)


def _scrub(
    spooler: Spooler, task: Any, args: Any, kwargs: Any, message: str, tb: str
) -> tuple[str, str]:
    """Hide the values of secret-looking arguments in an error before it is logged or stored."""
    secrets: set[str] = set()
    names = [
        p.name for p in task._signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    redactor = spooler.redactor
    try:
        redactor.call(args, kwargs, names, secrets)
        return redactor.text(message, secrets), redactor.text(tb, secrets)
    except Exception:  # redaction must never lose the job's outcome
        log.exception("redaction failed; the error text is withheld")
        return "(error text withheld: redaction failed)", ""


def _wrap(middleware: Any, running: RunningJob, call_next: Callable[[], Any]) -> Callable[[], Any]:
    def wrapped() -> Any:
        return middleware(running, call_next)

    return wrapped


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else now + ttl
