"""The seed's tasks, ported: a thread task and a spooled task that report progress.

The blog's tasks print ``Working... i/n`` once a second; these do too, and the
spooled one also records it as progress, which ``GET /jobs/<id>`` and
``flask spool jobs show <id>`` display.
"""

from __future__ import annotations

import time

from flask import current_app
from spoolhouse import Spooler, current_job

#: No URL and no app here: ``create_app()`` binds it, and its store becomes
#: ``instance/spoolhouse.db`` (``SPOOLHOUSE_URL`` to change it).
spooler = Spooler()


def _step_seconds() -> float:
    # Both tasks run inside an app context (the worker pushes one per job, the
    # thread pool pushes the caller's app), so the app's config is at hand.
    return float(current_app.config["DEMO_STEP_SECONDS"])


@spooler.thread(max_workers=2, max_pending=8)
def threaded_task(duration: int) -> None:
    """The seed's ``Thread``/``@thread`` task, on a bounded pool. Lost if the process exits."""
    for i in range(duration):
        print(f"Working in a thread... {i + 1}/{duration}", flush=True)
        time.sleep(_step_seconds())


@spooler.task(retries=2, timeout=120)
def spool_task(duration: int) -> str:
    """The seed's spooled task: durable, run by a worker process, with progress."""
    job = current_job()
    for i in range(duration):
        print(f"Working... {i + 1}/{duration} (job {job.id})", flush=True)
        job.progress(i + 1, duration, message=f"Working... {i + 1}/{duration}")
        time.sleep(_step_seconds())
    return f"worked for {duration} steps"
