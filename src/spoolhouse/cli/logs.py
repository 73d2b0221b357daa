"""Logging set-up for the command line. The library itself only logs to named loggers."""

from __future__ import annotations

import json
import logging
import sys


class JobFields(logging.Filter):
    """Adds ``job_id``, ``task``, ``queue`` and ``attempt`` to records logged during a job."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ..context import _current

        running = _current.get()
        if running is not None and not hasattr(record, "job_id"):
            record.job_id = running.id
            record.task = running.task
            record.queue = running.job.queue
            record.attempt = running.attempt
        fields = record.__dict__
        record.job = (
            f" [job {fields['job_id']} {fields.get('task')} #{fields.get('attempt')}]"
            if "job_id" in fields else ""
        )
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with job fields when the record carries them."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key in ("job_id", "task", "queue", "attempt"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(level: int, fmt: str = "text") -> None:
    """Send ``spoolhouse`` logs to stderr; called by the CLI and by worker processes.

    Records logged while a job runs (by Spoolhouse or by the task through the
    ``spoolhouse`` logger tree or the root logger) carry the job's id, task,
    queue and attempt. The root logger gets the same handler when it has none,
    so a task's own ``logging.getLogger(__name__)`` lines show up too.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s [%(process)d] %(levelname)s %(name)s%(job)s: %(message)s"
            )
        )
    handler.addFilter(JobFields())
    logger = logging.getLogger("spoolhouse")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(min(level, logging.INFO))

