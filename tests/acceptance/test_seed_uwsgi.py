"""The seed's own app.py and tasks.py (imports changed) under waitress, with a real worker.

``examples/seed_uwsgi`` is served by ``waitress-serve`` while ``spoolhouse
worker`` runs its spooler tasks from a temporary SQLite file, as ``uwsgi
--ini uwsgi.ini`` once did both. Bounded to 60 s; every process started here
is killed by PID (and session) in a ``finally``.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import pytest
from procs import (
    REPO,
    Procs,
    base_env,
    executable,
    free_port,
    http_get,
    port_open,
    wait_until,
)

from spoolhouse import JobState, Spooler
from spoolhouse.contrib import uwsgi
from spoolhouse.job import FINAL_STATES, Job

pytestmark = pytest.mark.slow

SEED = REPO / "examples" / "seed_uwsgi"
HERE = Path(__file__).resolve().parent
BUDGET = 60.0


def test_the_seeds_app_on_waitress_with_a_spoolhouse_worker(tmp_path: Path) -> None:
    pytest.importorskip("waitress")
    deadline = time.monotonic() + BUDGET
    url = f"sqlite:///{tmp_path}/seed.db"
    env = base_env(SPOOLHOUSE_URL=url, PYTHONPATH=os.pathsep.join([str(SEED), str(HERE)]))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = Procs(tmp_path)
    retry_tasks = importlib.import_module("seed_retry_tasks")  # registers always_retry here
    store = Spooler(url)  # the test's own view of the store
    before = uwsgi.spooler.url
    try:
        # uWSGI's spooler-processes / spooler-import, as a separate command
        procs.start(
            "worker",
            [executable("spoolhouse"), "--app", "spoolhouse.contrib.uwsgi:spooler", "worker",
             "--processes", "2", "--shutdown-timeout", "5"],
            env={**env, "SPOOLHOUSE_IMPORT": "tasks,seed_retry_tasks"}, cwd=tmp_path,
        )
        web = procs.start(
            "web", [executable("waitress-serve"), f"--listen=127.0.0.1:{port}", "app:app"],
            env=env, cwd=tmp_path,
        )
        wait_until(lambda: port_open(port) or web.poll() is not None, 20, "waitress to listen",
                   deadline)
        assert web.poll() is None, procs.log("web")

        # the three routes answer
        status, body = http_get(f"{base}/")
        assert status == 200 and body["started"] is True and body["thread_name"], body
        assert http_get(f"{base}/uwsgi_thread") == (200, {"started": True})
        asked = time.time()
        assert http_get(f"{base}/uwsgi_spool") == (200, {"started": True})

        # the spooled task runs, not before its `at`
        def spooled() -> Job | None:
            jobs = store.backend.list_jobs(task="tasks.spool_task", limit=5)
            return jobs[0] if jobs else None

        job = wait_until(spooled, 10, "the /uwsgi_spool job to be stored", deadline)

        def finished(job_id: str) -> Job | None:
            current = store.backend.get(job_id)
            return current if current is not None and current.state in FINAL_STATES else None

        done = wait_until(lambda: finished(job.id), 30, "the spooled task to finish", deadline)
        assert done.state is JobState.SUCCEEDED, done.error
        assert done.run_at >= int(asked) + 3  # at = int(time.time()) + 3 in the view
        assert done.started_at is not None and done.started_at >= done.run_at
        wait_until(lambda: "Working in uwsgi spool... 5/5" in procs.log("worker"), 10,
                   "the worker's output", deadline)

        # the thread routes ran in the web process
        wait_until(lambda: "Working... 5/5" in procs.log("web")
                   and "Working in uwsgi thread... 5/5" in procs.log("web"), 10,
                   "the thread tasks' output", deadline)

        # SPOOL_RETRY: run again, counted, then failed
        uwsgi.configure(url)
        handle = retry_tasks.always_retry.spool(tag="acceptance")
        failed = wait_until(lambda: finished(handle.id), 30, "the retrying task to end",
                            deadline)
        assert failed.state is JobState.FAILED
        assert failed.attempt == failed.max_attempts == 3
        assert handle.error["reason"] == "retry"
        wait_until(lambda: procs.log("worker").count("always_retry attempt for acceptance") == 3,
                   5, "three attempts in the worker's output", deadline)
    finally:
        uwsgi.configure(before)
        store.close()
        procs.kill_all()
