"""``examples/flask_app``: the seed's demo ported, through Flask's test client."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from flask import Flask


@pytest.fixture
def demo(flask_example: dict[str, ModuleType]) -> tuple[Flask, Any]:
    app = flask_example["app"].create_app({"SPOOLHOUSE_URL": "memory://",
                                           "DEMO_STEP_SECONDS": 0})
    return app, flask_example["tasks"]


def test_spool_route_answers_with_a_job_whose_progress_the_status_page_shows(
    demo: tuple[Flask, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    app, tasks = demo
    client = app.test_client()
    response = client.post("/spool/3")
    assert response.status_code == 202
    body = response.get_json()
    assert body["durable"] is True and body["status_url"].endswith(f"/jobs/{body['job_id']}")

    status = client.get(f"/jobs/{body['job_id']}").get_json()
    assert status["status"] == "pending" and status["progress"] is None

    assert tasks.spooler.drain() == 1
    status = client.get(f"/jobs/{body['job_id']}").get_json()
    assert status["status"] == "succeeded"
    assert status["result"] == "worked for 3 steps"
    assert status["progress"] == {"current": 3, "total": 3, "message": "Working... 3/3",
                                  "percent": 100}
    assert "Working... 3/3" in capsys.readouterr().out


def test_spool_at_route_schedules_three_seconds_later(demo: tuple[Flask, Any]) -> None:
    app, tasks = demo
    body = app.test_client().get("/spool_at/2").get_json()
    info = tasks.spooler.job(body["job_id"]).info()
    assert 2.9 <= info.run_at - info.created_at <= 3.1
    status = app.test_client().get(f"/jobs/{body['job_id']}").get_json()
    assert status["status"] == "scheduled"


def test_thread_route_runs_the_task_on_the_bounded_pool_in_the_app_context(
    demo: tuple[Flask, Any]
) -> None:
    app, tasks = demo
    assert app.test_client().get("/thread/1").status_code == 202
    with app.app_context():
        tasks.threaded_task(2).result(timeout=10)  # reads DEMO_STEP_SECONDS from current_app


def test_bad_duration_unknown_job_and_the_job_list(demo: tuple[Flask, Any]) -> None:
    app, _ = demo
    client = app.test_client()
    assert client.get("/spool/0").status_code == 400
    assert client.get("/spool/61").status_code == 400
    assert client.get("/jobs/nope").status_code == 404
    ids = [client.get("/spool/1").get_json()["job_id"] for _ in range(2)]
    listed = client.get("/jobs").get_json()["jobs"]
    assert set(ids) <= {j["id"] for j in listed}
    assert set(client.get("/").get_json()) == {"thread", "spool", "spool_at", "jobs"}
