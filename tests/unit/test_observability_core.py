"""Health command and job fields on log lines."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from spoolhouse import FakeClock, Spooler
from spoolhouse.cli import main
from spoolhouse.cli.logs import JobFields, JSONFormatter


def test_log_lines_inside_a_job_carry_its_fields() -> None:
    sp = Spooler("memory://", clock=FakeClock())
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(JobFields())
    logger = logging.getLogger("tests.jobfields")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        @sp.task(name="talk")
        def talk() -> None:
            logger.info("inside")

        job = talk.spool()
        logger.info("outside")
        sp.drain()
    finally:
        logger.removeHandler(handler)
    inside = next(r for r in records if r.getMessage() == "inside")
    outside = next(r for r in records if r.getMessage() == "outside")
    assert inside.job_id == job.id and inside.task == "talk" and inside.attempt == 1  # type: ignore[attr-defined]
    assert not hasattr(outside, "job_id")
    line = json.loads(JSONFormatter().format(inside))
    assert line["job_id"] == job.id and line["queue"] == "default"


def write_health(path: Path, age: float, alive: bool = True) -> None:
    path.write_text(json.dumps({
        "pid": 1, "time": time.time() - age, "stopping": False, "processes": 2, "restarts": 0,
        "children": [{"pid": 2, "alive": alive, "running": []}],
    }))


@pytest.mark.parametrize(("age", "alive", "code"), [(1, True, 0), (100, True, 1), (1, False, 1)])
def test_health_command(tmp_path: Path, age: float, alive: bool, code: int) -> None:
    path = tmp_path / "health.json"
    write_health(path, age, alive)
    result = CliRunner().invoke(main, ["health", "--file", str(path), "--max-age", "30"])
    assert result.exit_code == code, result.output
    assert ("healthy" if code == 0 else "unhealthy") in result.output


def test_health_command_on_a_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["health", "--file", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "cannot read" in result.output
