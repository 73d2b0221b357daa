"""The job being executed, reachable from inside a task: ``current_job()``."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Abort, SpoolhouseError
from .job import Job


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """Progress a task reported: ``current`` of ``total``, with an optional message."""

    current: float
    total: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float | None:
        """``current / total`` in [0, 1], or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return max(0.0, min(1.0, self.current / self.total))

    def to_json(self) -> str:
        return json.dumps({"current": self.current, "total": self.total, "message": self.message})

    @classmethod
    def from_json(cls, text: str | None) -> Progress | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                current=float(data.get("current", 0)),
                total=None if data.get("total") is None else float(data["total"]),
                message=str(data.get("message") or ""),
            )
        except (ValueError, TypeError, AttributeError):
            return None


class RunningJob:
    """What a task sees of its own job while it runs."""

    def __init__(self, job: Job, report: Callable[[str], bool] | None = None) -> None:
        self.job = job
        self._report = report
        self._abort = False  # set by the worker's heartbeat thread; a plain flag is enough

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def task(self) -> str:
        return self.job.task

    @property
    def headers(self) -> dict[str, str]:
        """Headers stored with the job at spool time (see ``Spooler.add_spool_hook``)."""
        if not self.job.headers:
            return {}
        try:
            data = json.loads(self.job.headers)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, …"""
        return self.job.attempt

    def request_abort(self) -> None:
        """Called by the worker when cancellation of this running job was requested."""
        self._abort = True

    def should_abort(self) -> bool:
        """``True`` once someone asked to cancel this job; the task should stop soon."""
        return self._abort

    def progress(self, current: float, total: float | None = None, *, message: str = "") -> None:
        """Record progress. Raises :class:`~spoolhouse.errors.Abort` if cancellation was asked.

        Example: ``current_job().progress(i + 1, n, message="resizing")``.
        """
        text = Progress(current=current, total=total, message=message).to_json()
        if self._report is not None and self._report(text):
            self._abort = True
        if self._abort:
            raise Abort(f"job {self.id} was cancelled while running")


_current: contextvars.ContextVar[RunningJob | None] = contextvars.ContextVar(
    "spoolhouse_current_job", default=None
)


def current_job() -> RunningJob:
    """The job this task runs as. Only valid inside a task executed by a worker."""
    running = _current.get()
    if running is None:
        raise SpoolhouseError(
            "current_job() is only available while a worker executes a task; when the "
            "function is called directly there is no job"
        )
    return running


def set_current(running: RunningJob | None) -> contextvars.Token[RunningJob | None]:
    return _current.set(running)


def reset_current(token: contextvars.Token[RunningJob | None]) -> None:
    _current.reset(token)
