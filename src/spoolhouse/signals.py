"""Lifecycle signals (blinker), sent in the process where each event happens.

``job_spooled`` in the producer, after the job is stored; the others in the
worker process running the job, after its outcome is recorded. Every signal is
sent with the :class:`~spoolhouse.Spooler` as sender and ``job=`` (the
:class:`~spoolhouse.Job` as claimed or stored); outcome signals also carry
``duration=`` (seconds the attempt ran) and ``error=`` (the error dict, for
retried, failed and cancelled).

Example::

    from spoolhouse import signals

    @signals.job_failed.connect
    def alert(spooler, job, duration, error, **extra):
        notify(f"{job.task} failed: {error['message']}")

Receivers must be quick and must not raise: an exception in a receiver is
logged and ignored, so a broken receiver never loses a job.
"""

from __future__ import annotations

import logging
from typing import Any

from blinker import Namespace, Signal

log = logging.getLogger("spoolhouse.signals")

_ns = Namespace()

job_spooled: Signal = _ns.signal("job-spooled", doc="A job was stored.")
job_started: Signal = _ns.signal("job-started", doc="A worker started an attempt.")
job_succeeded: Signal = _ns.signal("job-succeeded", doc="An attempt returned.")
job_retried: Signal = _ns.signal("job-retried", doc="An attempt raised and will run again.")
job_failed: Signal = _ns.signal("job-failed", doc="The job moved to the dead-letter state.")
job_cancelled: Signal = _ns.signal("job-cancelled", doc="A running job stopped on cancellation.")

#: outcome kind (as recorded by the worker) → signal
BY_OUTCOME: dict[str, Signal] = {
    "succeeded": job_succeeded,
    "retry": job_retried,
    "failed": job_failed,
    "cancelled": job_cancelled,
}


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal`` if anyone listens; a failing receiver is logged, never raised."""
    if not signal.receivers:
        return
    try:
        signal.send(sender, **kwargs)
    except Exception:
        log.exception("a receiver of %s raised; ignored", getattr(signal, "name", signal))
