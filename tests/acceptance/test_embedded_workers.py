"""The demo app with embedded workers, under real servers.

* ``flask run`` (what ``scripts/demo`` runs): jobs run with progress, ``at``
  is honoured, and Ctrl-C stops the server *and* its workers.
* Two waitress processes on one store (as with several gunicorn workers):
  one runs the workers, the other stands by; when the first is SIGKILLed the
  second takes over and no job is lost.

Bounded in time; every process started here is killed by PID in a ``finally``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from procs import (
    REPO,
    Procs,
    alive,
    base_env,
    children,
    cmdline,
    executable,
    free_port,
    http_get,
    port_open,
    wait_until,
)

pytestmark = pytest.mark.slow

DEMO = REPO / "examples" / "flask_app"
BUDGET = 60.0


def demo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return base_env(
        FLASK_SPOOLHOUSE_EMBEDDED_WORKERS="1",
        FLASK_SPOOLHOUSE_URL=f"sqlite:///{tmp_path}/demo.db",
        FLASK_SPOOLHOUSE_SHUTDOWN_TIMEOUT="5",
        FLASK_DEMO_STEP_SECONDS="0.05",
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )


def supervisors_of(pid: int) -> list[int]:
    """The embedded supervisor processes a web process spawned."""
    return [c for c in children(pid)
            if "spawn_main" in cmdline(c) and "resource_tracker" not in cmdline(c)]


def job_done(base: str, job_id: str) -> dict[str, Any] | None:
    status, body = http_get(f"{base}/jobs/{job_id}")
    if status == 200 and body["status"] in ("succeeded", "failed"):
        return dict(body)
    return None


def test_flask_run_with_embedded_workers_and_ctrl_c(tmp_path: Path) -> None:
    deadline = time.monotonic() + BUDGET
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = Procs(tmp_path)
    try:
        web = procs.start(
            "demo", [executable("flask"), "--app", "app:create_app()", "run", "--port", str(port)],
            env=demo_env(tmp_path), cwd=DEMO,
        )
        wait_until(lambda: port_open(port) or web.poll() is not None, 20, "flask run to listen",
                   deadline)
        assert web.poll() is None, procs.log("demo")
        supervisor = wait_until(lambda: supervisors_of(web.pid), 20,
                                "the embedded supervisor to start with the app", deadline)[0]
        procs.sessions.add(supervisor)  # its own session: killed with it if the test fails

        status, body = http_get(f"{base}/spool/3")
        assert status == 202, body
        done = wait_until(lambda: job_done(base, body["job_id"]), 30, "the spooled job", deadline)
        assert done["status"] == "succeeded" and done["result"] == "worked for 3 steps"
        assert done["progress"]["percent"] == 100
        status, later = http_get(f"{base}/spool_at/1")
        done = wait_until(lambda: job_done(base, later["job_id"]), 30, "the job with at",
                          deadline)
        assert done["started_at"] >= done["run_at"] >= done["created_at"] + 2.9
        assert http_get(f"{base}/thread/1")[0] == 202
        wait_until(lambda: "Working... 3/3" in procs.log("demo"), 10, "the worker's output",
                   deadline)

        web.send_signal(signal.SIGINT)  # Ctrl-C
        wait_until(lambda: web.poll() is not None, 30, "flask run to exit", deadline)
        wait_until(lambda: not alive(supervisor), 30, "the embedded workers to stop at exit",
                   deadline)
    finally:
        procs.kill_all()


def test_two_web_processes_one_set_of_workers_and_takeover(tmp_path: Path) -> None:
    pytest.importorskip("waitress")
    deadline = time.monotonic() + BUDGET
    lock = tmp_path / "demo.db.embedded.lock"
    env = demo_env(tmp_path)
    procs = Procs(tmp_path)
    ports = [free_port(), free_port()]
    try:
        webs = [
            procs.start(f"web{i}", [executable("waitress-serve"), f"--listen=127.0.0.1:{port}",
                                    "--call", "app:create_app"], env=env, cwd=DEMO)
            for i, port in enumerate(ports)
        ]
        for web, port in zip(webs, ports, strict=True):
            wait_until(lambda p=port, w=web: port_open(p) or w.poll() is not None, 20,
                       "waitress to listen", deadline)
            assert web.poll() is None
        first, second = webs
        bases = [f"http://127.0.0.1:{port}" for port in ports]

        # the first request starts the workers in the first process
        assert http_get(f"{bases[0]}/")[0] == 200
        wait_until(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 20,
                   "the first web process to take the lock", deadline)
        old_supervisor = wait_until(lambda: supervisors_of(first.pid), 20,
                                    "its supervisor", deadline)[0]
        procs.sessions.add(old_supervisor)
        # the second only stands by, but its jobs run
        status, body = http_get(f"{bases[1]}/spool/2")
        assert status == 202
        done = wait_until(lambda: job_done(bases[1], body["job_id"]), 30, "a job", deadline)
        assert done["status"] == "succeeded"
        assert supervisors_of(second.pid) == []
        assert lock.read_text().strip() == str(first.pid)

        # the lock holder dies without a word: the other takes over, nothing is lost
        os.kill(first.pid, signal.SIGKILL)
        status, body = http_get(f"{bases[1]}/spool/2")
        assert status == 202
        wait_until(lambda: lock.read_text().strip() == str(second.pid), 20,
                   "the second web process to take over the lock", deadline)
        wait_until(lambda: not alive(old_supervisor), 20,
                   "the dead process's supervisor to stop", deadline)
        done = wait_until(lambda: job_done(bases[1], body["job_id"]), 30,
                          "the job spooled after the takeover", deadline)
        assert done["status"] == "succeeded"
        assert len(supervisors_of(second.pid)) == 1
    finally:
        procs.kill_all()
