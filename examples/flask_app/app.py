"""The seed's demo app ("Background jobs with Flask"), ported to Spoolhouse.

Run it with its workers (what ``bash scripts/demo`` does)::

    cd examples/flask_app
    FLASK_SPOOLHOUSE_EMBEDDED_WORKERS=2 flask --app 'app:create_app()' run

or run the web server and the workers apart, as in production::

    flask --app 'app:create_app()' run
    flask --app 'app:create_app()' spool worker --processes 2

Routes (GET or POST; ``duration`` is optional, 5 by default):

``/thread/<duration>``    the seed's thread task, on a bounded in-process pool
``/spool/<duration>``     the seed's spooled task: a durable job; answers with its id
``/spool_at/<duration>``  the same, run 3 seconds later (the seed's ``at``)
``/jobs/<id>``            a job's status, progress, result or error
``/jobs``                 the latest jobs
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks import spool_task, spooler, threaded_task

from flask import Flask, abort, request, url_for
from spoolhouse.cli import job_dict

DEFAULT_DURATION = 5


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.secret_key = os.urandom(42)
    app.config.from_mapping(
        DEMO_STEP_SECONDS=1.0,  # how long one "Working... i/n" step takes
        DEMO_MAX_DURATION=60,
        SPOOLHOUSE_SHUTDOWN_TIMEOUT=10.0,
    )
    # FLASK_SPOOLHOUSE_EMBEDDED_WORKERS=2 in the environment sets
    # SPOOLHOUSE_EMBEDDED_WORKERS = 2, and so on for every key.
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)
    spooler.init_app(app)

    def duration_arg(duration: int) -> int:
        limit = app.config["DEMO_MAX_DURATION"]
        if not 1 <= duration <= limit:
            abort(400, f"duration must be between 1 and {limit}")
        return duration

    @app.route("/")
    def index() -> dict[str, Any]:
        return {
            "thread": url_for("thread", _external=True),
            "spool": url_for("spool", _external=True),
            "spool_at": url_for("spool_at", _external=True),
            "jobs": url_for("jobs", _external=True),
        }

    @app.route("/thread", defaults={"duration": DEFAULT_DURATION}, methods=["GET", "POST"])
    @app.route("/thread/<int:duration>", methods=["GET", "POST"])
    def thread(duration: int) -> tuple[dict[str, Any], int]:
        threaded_task(duration_arg(duration))
        return {"started": True, "kind": "thread", "durable": False,
                "note": "runs in this web process; lost if it exits"}, 202

    @app.route("/spool", defaults={"duration": DEFAULT_DURATION}, methods=["GET", "POST"])
    @app.route("/spool/<int:duration>", methods=["GET", "POST"])
    def spool(duration: int) -> tuple[dict[str, Any], int]:
        job = spool_task.spool(duration_arg(duration))
        return _started(job.id), 202

    @app.route("/spool_at", defaults={"duration": DEFAULT_DURATION}, methods=["GET", "POST"])
    @app.route("/spool_at/<int:duration>", methods=["GET", "POST"])
    def spool_at(duration: int) -> tuple[dict[str, Any], int]:
        at = datetime.now(UTC) + timedelta(seconds=3)  # delay by 3 s, as the seed does
        job = spool_task.options(at=at).spool(duration_arg(duration))
        return {**_started(job.id), "run_at": at.isoformat()}, 202

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> dict[str, Any]:
        handle = spooler.job(job_id)
        try:
            info = handle.info()
        except LookupError:
            abort(404, f"no job {job_id}")
        data = job_dict(info, spooler.clock.now())
        progress = handle.progress
        if progress is not None and progress.fraction is not None:
            data["progress"]["percent"] = round(progress.fraction * 100)
        if data["status"] == "succeeded":
            data["result"] = handle.result(timeout=0)
        if data["error"]:
            data["error"].pop("traceback", None)
        return data

    @app.get("/jobs")
    def jobs() -> dict[str, Any]:
        limit = min(request.args.get("limit", 20, type=int), 200)
        now = spooler.clock.now()
        return {"jobs": [
            {**job_dict(j, now), "url": url_for("job_status", job_id=j.id, _external=True)}
            for j in spooler.backend.list_jobs(limit=limit)
        ]}

    return app


def _started(job_id: str) -> dict[str, Any]:
    return {
        "started": True,
        "kind": "spool",
        "durable": True,
        "job_id": job_id,
        "status_url": url_for("job_status", job_id=job_id, _external=True),
    }
