"""Every page: overview, job lists with filters and keyset pages, a job, periodic tasks."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from dashboard_helpers import PREFIX, Tasks, full, text
from flask.testing import FlaskClient

from spoolhouse import Spooler
from spoolhouse.context import Progress

JOB_LINK = re.compile(r'href="/spool/jobs/([0-9a-f-]{36})"')


def job_ids(html: str) -> list[str]:
    return list(dict.fromkeys(JOB_LINK.findall(html)))


def running_job(tasks: Tasks, worker_id: str = "host-a:4242", progress: Progress | None = None) -> Any:
    handle = tasks.slow.spool(7)
    backend = tasks.spooler.backend
    [job] = backend.claim(["slow"], worker_id=worker_id, now=tasks.clock.now(), lease=30)
    if progress is not None:
        backend.set_progress(job.id, job.lease, progress.to_json())
    assert job.id == handle.id
    return job


# -- overview ------------------------------------------------------------------------------
def test_overview_of_an_empty_store(client: FlaskClient) -> None:
    response = client.get(PREFIX + "/")
    assert response.status_code == 200
    body = text(response)
    assert "No jobs are stored." in body
    assert "No job is running." in body
    assert "no job finished in the last hour" in body


def test_overview_counts_chart_and_workers(client: FlaskClient, tasks: Tasks) -> None:
    for i in range(3):
        tasks.add.spool(i, 1)
    tasks.login.spool("bob", "pw")
    tasks.spooler.drain()
    tasks.add.spool(9, 9)  # pending
    running_job(tasks, "host-a:4242", Progress(current=3, total=10, message="chunk 3"))
    body = text(client.get(PREFIX + "/"))
    counts = body[body.index('id="counts"'):body.index("</table>", body.index('id="counts"'))]
    # default queue: 1 pending, 3 succeeded, 1 failed; slow: 1 running
    assert re.search(r"jobs\?queue=default&amp;state=succeeded\">3<", counts)
    assert re.search(r"jobs\?queue=default&amp;state=failed\">1<", counts)
    assert re.search(r"jobs\?queue=slow&amp;state=running\">1<", counts)
    assert 'id="total-pending">1<' in body and 'id="total-failed">1<' in body
    # the chart: one minute with 3 succeeded and 1 failed, drawn as inline SVG
    assert "<svg" in body and 'class="succeeded"' in body and 'class="failed"' in body
    assert "3 succeeded, 1 failed, 0 retried" in body
    assert "25.0 %" in body  # failure rate
    # workers, inferred from running jobs
    assert "host-a:4242" in body and "inferred from the jobs they are running" in body
    assert '<progress max="100" value="30.0">' in body and "chunk 3" in body


def test_overview_flags_an_expired_lease(client: FlaskClient, tasks: Tasks) -> None:
    running_job(tasks)
    tasks.clock.advance(120)
    assert "the worker may have died" in text(client.get(PREFIX + "/"))


def test_live_fragment_is_the_overview_without_the_page(client: FlaskClient, tasks: Tasks) -> None:
    tasks.add.spool(1, 2)
    response = client.get(PREFIX + "/live/overview")
    body = text(response)
    assert response.status_code == 200
    assert "<html" not in body and 'id="counts"' in body
    full_page = text(client.get(PREFIX + "/"))
    assert 'data-live="/spool/live/overview"' in full_page
    assert "/spool/assets/dashboard.js" in full_page


def test_a_store_without_stats_shows_no_chart(client: FlaskClient, spooler: Spooler,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_stats(*, since: float) -> Any:
        raise NotImplementedError

    monkeypatch.setattr(spooler.backend, "stats", no_stats)
    assert "keeps no per-minute statistics" in text(client.get(PREFIX + "/"))


def test_an_unreachable_store_is_a_503(client: FlaskClient, spooler: Spooler,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from spoolhouse.errors import BackendUnavailable

    def down() -> Any:
        raise BackendUnavailable("redis://***@h:6379 did not answer within 5s")

    monkeypatch.setattr(spooler.backend, "counts", down)
    response = client.get(PREFIX + "/")
    assert response.status_code == 503
    assert "cannot be read right now" in text(response)


# -- job lists -----------------------------------------------------------------------------
def test_lists_filter_by_state_queue_task_and_key(client: FlaskClient, tasks: Tasks) -> None:
    ok = [tasks.add.spool(i, i).id for i in range(2)]
    keyed = tasks.add.options(key="invoice-42").spool(5, 5).id
    bad = tasks.login.spool("bob", "pw").id
    tasks.spooler.drain()
    waiting = tasks.slow.spool(1).id

    def listed(query: str) -> set[str]:
        response = client.get(f"{PREFIX}/jobs{query}")
        assert response.status_code == 200
        return set(job_ids(text(response)))

    assert listed("") == {*ok, keyed, bad, waiting}
    assert listed("?state=succeeded") == {*ok, keyed}
    assert listed("?state=failed") == {bad}
    assert listed("?queue=slow") == {waiting}
    assert listed("?task=demo.login") == {bad}
    assert listed("?key=invoice-42") == {keyed}
    assert listed("?state=failed&queue=slow") == set()
    assert client.get(PREFIX + "/jobs?state=bogus").status_code == 400


def test_search_by_id_opens_the_job_and_by_key_lists(client: FlaskClient, tasks: Tasks) -> None:
    handle = tasks.add.options(key="order-7").spool(1, 1)
    response = client.get(f"{PREFIX}/jobs?q={handle.id}")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/spool/jobs/{handle.id}")
    by_key = text(client.get(f"{PREFIX}/jobs?q=order-7"))
    assert job_ids(by_key) == [handle.id]
    assert "whose key is" in by_key
    assert job_ids(text(client.get(f"{PREFIX}/jobs?q=nothing-like-it"))) == []


def test_keyset_pages_walk_every_job_once(make_client: Callable[..., FlaskClient], tasks: Tasks,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spooled = []
    for i in range(7):
        spooled.append(tasks.add.spool(i, 0).id)
        tasks.clock.advance(0.01)  # ids are time-ordered
    # a list page never counts (a million rows must stay fast)
    monkeypatch.setattr(tasks.spooler.backend, "counts", lambda: pytest.fail("counted"))
    client = make_client(access=full, page_size=3)
    seen: list[str] = []
    url = f"{PREFIX}/jobs?queue=default"
    pages = 0
    while url:
        body = text(client.get(url))
        seen += job_ids(body)
        pages += 1
        nxt = re.search(r'<a rel="next" href="([^"]+)"', body)
        url = nxt.group(1).replace("&amp;", "&") if nxt else ""
        if nxt:
            assert "queue=default" in url and "cursor=" in url  # filters are kept
    assert pages == 3
    assert seen == list(reversed(spooled))  # newest first, each once


def test_list_arguments_are_truncated(client: FlaskClient, tasks: Tasks) -> None:
    tasks.login.spool("x" * 5000, "pw", note="y" * 5000)
    body = text(client.get(PREFIX + "/jobs"))
    assert "x" * 100 not in body
    assert "xxxx" in body


def test_a_list_page_stays_under_one_mebibyte(make_client: Callable[..., FlaskClient],
                                              tasks: Tasks) -> None:
    big = {"rows": [{"name": "n" * 200, "items": list(range(20))} for _ in range(50)],
           "blob": "z" * 300_000}
    for _ in range(50):
        tasks.secret_result.spool(big)
    tasks.login.spool("u" * 100_000, "p")
    tasks.spooler.drain()
    client = make_client(access=full)
    for query in ("", "?state=succeeded", "?state=failed"):
        response = client.get(PREFIX + "/jobs" + query)
        assert len(response.get_data()) < 1 << 20
        assert len(response.get_data()) < 200_000  # in fact far below


# -- one job -------------------------------------------------------------------------------
def test_job_page_shows_everything(client: FlaskClient, tasks: Tasks) -> None:
    handle = tasks.add.options(key="sum-1", priority=3).spool(2, 40)
    tasks.spooler.drain()
    body = text(client.get(f"{PREFIX}/jobs/{handle.id}"))
    assert handle.id in body
    assert "a = 2" in body and "b = 40" in body  # decoded, named after the parameters
    assert 'id="job-result">42<' in body
    assert 'id="job-status">succeeded<' in body
    assert "1 of 1" in body and "sum-1" in body
    for label in ("created", "started", "finished"):
        assert f'<th scope="row">{label}</th>' in body
    assert "2023-11-14 22:13:20 UTC" in body  # the FakeClock's time, in UTC


def test_failed_job_page_shows_error_and_traceback(client: FlaskClient, tasks: Tasks) -> None:
    handle = tasks.login.spool("bob", "pw", note="first try")
    tasks.spooler.drain()
    body = text(client.get(f"{PREFIX}/jobs/{handle.id}"))
    assert 'id="job-status">failed<' in body
    assert "PermissionError" in body and "login failed for bob" in body
    assert 'id="job-traceback">Traceback (most recent call last)' in body
    assert 'id="retry-button"' in body and 'id="delete-button"' in body
    assert 'id="cancel-button"' not in body
    assert "data-final" in body and "data-live" not in body  # finished: no refresh


def test_running_job_page_refreshes_and_shows_progress(client: FlaskClient, tasks: Tasks) -> None:
    job = running_job(tasks, progress=Progress(current=1, total=4, message="quarter"))
    body = text(client.get(f"{PREFIX}/jobs/{job.id}"))
    assert f'data-live="/spool/jobs/{job.id}/live"' in body
    assert '<progress max="100" value="25.0">' in body and "quarter" in body
    assert 'id="cancel-button"' in body and 'id="retry-button"' not in body
    assert "host-a:4242" in body
    live = text(client.get(f"{PREFIX}/jobs/{job.id}/live"))
    assert "<html" not in live and 'id="job-status">running<' in live


def test_unknown_job_is_a_404(client: FlaskClient) -> None:
    for url in ("/jobs/0190aaaa-0000-7000-8000-000000000000", "/jobs/" + "x" * 500,
                "/jobs/nope/live"):
        assert client.get(PREFIX + url).status_code == 404


def test_undecodable_arguments_are_reported(client: FlaskClient, tasks: Tasks) -> None:
    from spoolhouse.job import Job, new_job_id

    now = tasks.clock.now()
    job = Job(id=new_job_id(now), task="demo.add", queue="default", payload=b"\x80not json",
              created_at=now, run_at=now)
    tasks.spooler.backend.enqueue(job, now=now)
    assert "undecodable" in text(client.get(PREFIX + "/jobs"))
    assert "cannot decode the arguments (SerializationError)" in text(
        client.get(f"{PREFIX}/jobs/{job.id}"))


# -- periodic ------------------------------------------------------------------------------
def test_periodic_page_lists_schedules_with_next_and_last_run(client: FlaskClient,
                                                              tasks: Tasks) -> None:
    spooler = tasks.spooler

    @spooler.periodic(every=300, name="demo.cleanup")
    def cleanup() -> None:  # pragma: no cover - never run here
        pass

    body = text(client.get(PREFIX + "/periodic"))
    assert "demo.cleanup" in body and "every 5 minutes" in body
    assert "never" in body
    assert "2023-11-14 22:15:00 UTC" in body  # next 5-minute tick after the FakeClock's time
    schedule = spooler.schedules["demo.cleanup"]
    tick = schedule.latest_tick(tasks.clock.now())
    job = spooler.build_job(schedule.task, (), {}, cleanup.options().opts, tasks.clock.now())
    spooler.backend.schedule_tick("demo.cleanup", tick, job, now=tasks.clock.now())
    assert "never" not in text(client.get(PREFIX + "/periodic"))


def test_periodic_page_without_schedules(client: FlaskClient) -> None:
    assert "No periodic task is registered" in text(client.get(PREFIX + "/periodic"))
