"""Actions: per-job retry, cancel and delete; bulk actions and purges behind a confirmation."""

from __future__ import annotations

import re

from dashboard_helpers import PREFIX, Tasks, csrf_token, text
from flask.testing import FlaskClient

from spoolhouse import JobState


def state(tasks: Tasks, job_id: str) -> JobState | None:
    job = tasks.spooler.backend.get(job_id)
    return None if job is None else job.state


def failed_jobs(tasks: Tasks, n: int, queue_task: str = "login") -> list[str]:
    task = tasks.login if queue_task == "login" else tasks.hostile
    ids = [task.spool(f"user{i}", "pw").id if task is tasks.login else task.spool("x").id
           for i in range(n)]
    tasks.spooler.drain()
    assert all(state(tasks, i) is JobState.FAILED for i in ids)
    return ids


def follow(client: FlaskClient, response: object) -> str:
    location = response.headers["Location"]  # type: ignore[attr-defined]
    return text(client.get(location))


# -- one job -------------------------------------------------------------------------------
def test_retry_a_failed_job(client: FlaskClient, tasks: Tasks) -> None:
    [job_id] = failed_jobs(tasks, 1)
    token = csrf_token(client, f"{PREFIX}/jobs/{job_id}")
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token})
    assert response.status_code == 303
    assert state(tasks, job_id) is JobState.PENDING
    assert tasks.spooler.backend.get(job_id).attempt == 0  # type: ignore[union-attr]
    page = follow(client, response)
    assert "Requeued: the job is pending again" in page
    assert 'id="job-status">pending<' in page


def test_retry_refused_for_a_job_that_is_not_failed(client: FlaskClient, tasks: Tasks) -> None:
    job_id = tasks.add.spool(1, 1).id
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token})
    assert "Not requeued" in follow(client, response)
    assert state(tasks, job_id) is JobState.PENDING


def test_cancel_a_pending_job_and_a_running_one(client: FlaskClient, tasks: Tasks) -> None:
    pending = tasks.add.spool(1, 1).id
    running = tasks.slow.spool(1).id
    backend = tasks.spooler.backend
    backend.claim(["slow"], worker_id="w", now=tasks.clock.now(), lease=30)
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/jobs/{pending}/cancel", data={"csrf_token": token})
    assert "Cancelled: the job will not run." in follow(client, response)
    assert state(tasks, pending) is JobState.CANCELLED
    response = client.post(f"{PREFIX}/jobs/{running}/cancel", data={"csrf_token": token})
    page = follow(client, response)
    assert "Cancellation requested" in page and "(cancellation requested)" in page
    assert backend.get(running).abort_requested  # type: ignore[union-attr]
    response = client.post(f"{PREFIX}/jobs/{pending}/cancel", data={"csrf_token": token})
    assert "Nothing to cancel" in follow(client, response)


def test_delete_asks_first(client: FlaskClient, tasks: Tasks) -> None:
    [job_id] = failed_jobs(tasks, 1)
    token = csrf_token(client)
    ask = client.post(f"{PREFIX}/jobs/{job_id}/delete", data={"csrf_token": token})
    assert ask.status_code == 200
    assert f"Delete job {job_id}?" in text(ask)
    assert 'name="confirm" value="yes"' in text(ask)
    assert state(tasks, job_id) is JobState.FAILED
    done = client.post(f"{PREFIX}/jobs/{job_id}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 303
    assert state(tasks, job_id) is None
    assert "Deleted the job." in follow(client, done)


def test_delete_refuses_a_live_job(client: FlaskClient, tasks: Tasks) -> None:
    job_id = tasks.add.spool(1, 1).id
    token = csrf_token(client)
    done = client.post(f"{PREFIX}/jobs/{job_id}/delete", data={"csrf_token": token, "confirm": "yes"})
    assert "cancel it first" in follow(client, done)
    assert state(tasks, job_id) is JobState.PENDING


# -- selected jobs -------------------------------------------------------------------------
def test_bulk_retry_goes_through_a_confirmation_page(client: FlaskClient, tasks: Tasks) -> None:
    ids = failed_jobs(tasks, 3)
    listing = text(client.get(f"{PREFIX}/jobs?state=failed"))
    assert 'data-select-all' in listing and listing.count('name="job_id"') == 3
    token = re.search(r'name="csrf_token" value="([^"]+)"', listing).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": token, "action": "retry", "job_id": ids[:2], "state": "failed"}
    ask = client.post(f"{PREFIX}/bulk", data=form)
    assert ask.status_code == 200
    page = text(ask)
    assert "Requeue 2 selected job(s)?" in page
    assert all(i in page for i in ids[:2])
    assert all(state(tasks, i) is JobState.FAILED for i in ids)  # nothing yet
    done = client.post(f"{PREFIX}/bulk", data={**form, "confirm": "yes"})
    assert done.status_code == 303
    assert "state=failed" in done.headers["Location"]  # back to the same list
    assert "Requeued 2 of 2 selected job(s)." in follow(client, done)
    assert [state(tasks, i) for i in ids] == [JobState.PENDING, JobState.PENDING, JobState.FAILED]


def test_bulk_delete_and_cancel(client: FlaskClient, tasks: Tasks) -> None:
    failed = failed_jobs(tasks, 2)
    pending = tasks.add.spool(1, 2).id
    token = csrf_token(client)
    done = client.post(f"{PREFIX}/bulk", data={
        "csrf_token": token, "action": "delete", "job_id": [*failed, pending], "confirm": "yes"})
    assert "Deleted 2 of 3 selected job(s)" in follow(client, done)
    assert state(tasks, pending) is JobState.PENDING and state(tasks, failed[0]) is None
    done = client.post(f"{PREFIX}/bulk", data={
        "csrf_token": token, "action": "cancel", "job_id": [pending], "confirm": "yes"})
    assert "Cancelled 1 of 1" in follow(client, done)
    assert state(tasks, pending) is JobState.CANCELLED


def test_bulk_without_a_selection_or_with_too_much(client: FlaskClient) -> None:
    token = csrf_token(client)
    none = client.post(f"{PREFIX}/bulk", data={"csrf_token": token, "action": "retry"})
    assert "No job was selected." in follow(client, none)
    many = client.post(f"{PREFIX}/bulk", data={
        "csrf_token": token, "action": "retry", "job_id": [f"id-{i}" for i in range(1001)]})
    assert many.status_code == 400
    odd = client.post(f"{PREFIX}/bulk", data={"csrf_token": token, "action": "explode", "job_id": "x"})
    assert odd.status_code == 400


def test_bulk_needs_a_token_too(client: FlaskClient, tasks: Tasks) -> None:
    ids = failed_jobs(tasks, 1)
    csrf_token(client)
    response = client.post(f"{PREFIX}/bulk", data={"action": "retry", "job_id": ids, "confirm": "yes"})
    assert response.status_code == 403
    assert state(tasks, ids[0]) is JobState.FAILED


# -- everything matching -------------------------------------------------------------------
def test_retry_all_failed_of_a_queue(client: FlaskClient, tasks: Tasks) -> None:
    mine = failed_jobs(tasks, 3)
    other = failed_jobs(tasks, 1, queue_task="hostile")
    listing = text(client.get(f"{PREFIX}/jobs?state=failed&queue=default"))
    assert "Retry every failed job matching these filters" in listing
    token = csrf_token(client)
    form = {"csrf_token": token, "state": "failed", "queue": "default"}
    ask = client.post(f"{PREFIX}/retry-all", data=form)
    assert ask.status_code == 200 and "Requeue every failed job with queue &#39;default&#39;?" in text(ask)
    done = client.post(f"{PREFIX}/retry-all", data={**form, "confirm": "yes"})
    assert "Requeued 3 job(s)." in follow(client, done)
    assert all(state(tasks, i) is JobState.PENDING for i in mine)
    assert state(tasks, other[0]) is JobState.FAILED


def test_retry_all_only_for_failed_or_cancelled(client: FlaskClient) -> None:
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/retry-all", data={"csrf_token": token, "state": "succeeded"})
    assert response.status_code == 400


def test_purge_by_state_and_queue_asks_first(client: FlaskClient, tasks: Tasks) -> None:
    mine = failed_jobs(tasks, 2)
    other = failed_jobs(tasks, 1, queue_task="hostile")
    listing = text(client.get(f"{PREFIX}/jobs?state=failed&queue=default"))
    assert "Delete every failed job of queue “default”" in listing
    token = csrf_token(client)
    form = {"csrf_token": token, "state": "failed", "queue": "default"}
    ask = client.post(f"{PREFIX}/purge", data=form)
    assert "Delete every failed job in queue &#39;default&#39;, for good?" in text(ask)
    assert state(tasks, mine[0]) is JobState.FAILED
    done = client.post(f"{PREFIX}/purge", data={**form, "confirm": "yes"})
    assert "Deleted 2 job(s)." in follow(client, done)
    assert state(tasks, mine[0]) is None and state(tasks, other[0]) is JobState.FAILED


def test_purge_refuses_live_states(client: FlaskClient, tasks: Tasks) -> None:
    job_id = tasks.add.spool(1, 1).id
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/purge", data={"csrf_token": token, "state": "pending",
                                                    "confirm": "yes"})
    assert response.status_code == 400
    assert state(tasks, job_id) is JobState.PENDING


def test_get_never_changes_anything(client: FlaskClient, tasks: Tasks) -> None:
    [job_id] = failed_jobs(tasks, 1)
    for url in (f"/jobs/{job_id}/retry", f"/jobs/{job_id}/delete", "/bulk", "/purge"):
        assert client.get(PREFIX + url).status_code == 405
    assert state(tasks, job_id) is JobState.FAILED
