"""Spoolhouse: durable background jobs for Flask and any WSGI app.

>>> from spoolhouse import Spooler
>>> spooler = Spooler("memory://")
"""

from . import signals
from .clock import Clock, FakeClock, SystemClock
from .context import Progress, RunningJob, current_job
from .errors import (
    Abort,
    BackendUnavailable,
    ConfigurationError,
    EnqueueTimeout,
    JobCancelled,
    JobFailed,
    LeaseLost,
    PayloadTooLarge,
    QueueFull,
    Retry,
    SerializationError,
    SpoolhouseError,
    StorageFull,
    UnknownTask,
)
from .handle import JobHandle
from .job import Job, JobState
from .retry import RetryPolicy
from .spooler import Spooler
from .task import BoundTask, Task

__version__ = "0.1.0"

import logging as _logging

_logging.getLogger("spoolhouse").addHandler(_logging.NullHandler())

__all__ = [
    # the main objects
    "Spooler",
    "Task",
    "BoundTask",
    "JobHandle",
    # inside a task
    "current_job",
    "RunningJob",
    "Progress",
    "Retry",
    "Abort",
    # observability
    "signals",
    # records
    "Job",
    "JobState",
    "RetryPolicy",
    # time
    "Clock",
    "SystemClock",
    "FakeClock",
    # errors
    "SpoolhouseError",
    "ConfigurationError",
    "SerializationError",
    "PayloadTooLarge",
    "UnknownTask",
    "BackendUnavailable",
    "EnqueueTimeout",
    "StorageFull",
    "QueueFull",
    "LeaseLost",
    "JobFailed",
    "JobCancelled",
]
