"""End to end: ``spoolhouse worker --metrics-port`` with real worker processes."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from obs_helpers import Samples, pick, scrape, total, value

T = TypeVar("T")

APP = """
from spoolhouse import Spooler

spooler = Spooler("sqlite:///{db}", lease=5.0, heartbeat=1.0)


@spooler.task(name="e2e.ok")
def ok(n: int) -> int:
    return n


@spooler.task(name="e2e.boom", retries=1, backoff=0.05, jitter=0.0)
def boom(n: int) -> None:
    raise ValueError(f"boom {{n}}")
"""


def wait_until(pred: Callable[[], T | None], timeout: float, what: Callable[[], str]) -> T:
    """Poll ``pred`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = pred()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what()}")
        time.sleep(0.1)


def load_app(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"obs_e2e_app_{os.getpid()}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_worker_serves_metrics_aggregated_over_its_processes(
    prom: ModuleType, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    app_path = tmp_path / "obs_e2e_app.py"
    app_path.write_text(textwrap.dedent(APP.format(db=tmp_path / "spool.db")))
    health = tmp_path / "health.json"
    log_path = tmp_path / "worker.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    )}
    argv = [sys.executable, "-m", "spoolhouse", "--app", "obs_e2e_app:spooler", "worker",
            "--processes", "2", "--metrics-port", str(port), "--health-file", str(health)]
    app = load_app(app_path)
    spooler = app.spooler

    def log_tail() -> str:
        with contextlib.suppress(OSError):
            return "\nworker log:\n" + "\n".join(log_path.read_text().splitlines()[-30:])
        return ""

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def try_scrape() -> Samples | None:
            if proc.poll() is not None:
                pytest.fail(f"the worker exited with {proc.returncode}{log_tail()}")
            try:
                return scrape(url, timeout=5)[2]
            except (urllib.error.URLError, ConnectionError):
                return None

        wait_until(try_scrape, 30, lambda: f"{url} to answer{log_tail()}")

        handles = [app.ok.spool(n) for n in range(14)] + [app.boom.spool(n) for n in range(6)]
        assert len({h.id for h in handles}) == 20

        def all_final() -> bool:
            counts = spooler.backend.counts().get("default", {})
            return bool(counts.get("succeeded", 0) == 14 and counts.get("failed", 0) == 6)

        wait_until(all_final, 60, lambda: f"20 final jobs, have {spooler.backend.counts()}"
                   f"{log_tail()}")

        def counted() -> Samples | None:
            # outcomes reach the supervisor over a pipe, just after they are stored
            s = try_scrape()
            return s if s is not None and total(s, "spoolhouse_jobs_total") >= 26 else None

        s = wait_until(counted, 30, lambda: f"26 counted outcomes{log_tail()}")
        outcomes = {
            (dict(labels)["task"], dict(labels)["outcome"]): v
            for labels, v in pick(s, "spoolhouse_jobs_total").items()
        }
        assert outcomes == {
            ("e2e.ok", "succeeded"): 14,
            ("e2e.boom", "retry"): 6,
            ("e2e.boom", "failed"): 6,
        }
        assert total(s, "spoolhouse_job_duration_seconds_count") == 26
        assert value(s, "spoolhouse_queue_jobs", queue="default", state="succeeded") == 14
        assert value(s, "spoolhouse_queue_jobs", queue="default", state="failed") == 6
        assert value(s, "spoolhouse_queue_jobs", queue="default", state="pending") == 0
        assert value(s, "spoolhouse_queue_oldest_due_age_seconds", queue="default") == 0

        wait_until(health.exists, 30, lambda: f"the health file {health}{log_tail()}")
        check: Any = subprocess.run(
            [sys.executable, "-m", "spoolhouse", "health", "--file", str(health)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.startswith("healthy")

        os.kill(proc.pid, signal.SIGTERM)  # warm stop of the supervisor
        assert proc.wait(timeout=60) == 0, log_tail()
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: pgid == pid
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        spooler.close()
