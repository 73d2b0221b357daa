"""Logging set-up for the command line. The library itself only logs to named loggers."""

from __future__ import annotations

import json
import logging
import sys


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
    """Send ``spoolhouse`` logs to stderr; called by the CLI and by worker processes."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
    logger = logging.getLogger("spoolhouse")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False

