"""R25: secrets never reach a page, hostile names are escaped everywhere."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from dashboard_helpers import CANARY, HOSTILE, PREFIX, Tasks, csrf_token, full, text
from flask.testing import FlaskClient

from spoolhouse import Spooler
from spoolhouse.context import Progress


def every_page(client: FlaskClient, tasks: Tasks) -> dict[str, str]:
    """The HTML of every page and fragment, including each job's page and a confirmation."""
    pages = {}
    for url in ("/", "/live/overview", "/jobs", "/jobs?state=failed", "/jobs?state=succeeded",
                "/jobs?state=running", "/periodic", f"/jobs?queue={HOSTILE}",
                f"/jobs?task={HOSTILE}", f"/jobs?q={HOSTILE}"):
        response = client.get(PREFIX + url)
        assert response.status_code == 200, url
        pages[url] = text(response)
    for job in tasks.spooler.backend.list_jobs(limit=1000):
        for url in (f"/jobs/{job.id}", f"/jobs/{job.id}/live"):
            pages[url] = text(client.get(PREFIX + url))
    failed = [j.id for j in tasks.spooler.backend.list_jobs(state="failed")]
    token = csrf_token(client)
    confirm = client.post(PREFIX + "/bulk", data={"csrf_token": token, "action": "retry",
                                                  "job_id": failed, "queue": HOSTILE})
    pages["confirm"] = text(confirm)
    return pages


@pytest.fixture
def secret_jobs(tasks: Tasks) -> Tasks:
    """Jobs carrying the canary every way a secret travels."""
    spooler = tasks.spooler
    tasks.login.spool("bob", CANARY)  # positionally, named password by the signature
    tasks.login.spool(user="eve", password=CANARY, note="kw")  # as a keyword
    tasks.secret_result.spool({"name": "x", "credentials": {"api_key": CANARY}})  # nested
    tasks.secret_result.spool("carol")  # the result holds {"token": "tok-" + CANARY}
    tasks.add.spool(1, {"Authorization": f"Bearer {CANARY}"})  # a header-like mapping
    spooler.add_spool_hook(lambda task, queue: {"authorization": CANARY, "traceparent": "00-ab"})
    tasks.hostile.spool(HOSTILE)
    spooler.drain()
    # a running job reporting progress that quotes its secret
    job_id = tasks.slow.spool(3).id
    backend = spooler.backend
    [job] = backend.claim(["slow"], worker_id=f"w-{HOSTILE}", now=tasks.clock.now(), lease=30)
    assert job.id == job_id
    backend.set_progress(job.id, job.lease, Progress(current=1, total=2,
                                                     message=f"using password={CANARY}").to_json())
    return tasks


def test_the_canary_appears_nowhere(client: FlaskClient, secret_jobs: Tasks) -> None:
    pages = every_page(client, secret_jobs)
    for url, html in pages.items():
        assert html.count(CANARY) == 0, url
        assert html.count(CANARY.replace("-", "&#45;")) == 0, url
    # the secrets are shown as redacted, the rest as it is
    assert any("password = &lt;redacted&gt;" in html for html in pages.values())
    assert any("&#39;token&#39;: &lt;redacted&gt;" in html for html in pages.values())
    assert any("login failed for bob with password=&lt;redacted&gt;" in html for html in pages.values())
    assert any("traceparent" in html and "00-ab" in html for html in pages.values())


def test_the_canary_stays_in_the_store(secret_jobs: Tasks) -> None:
    """Redaction is a view: the job still runs with its real arguments."""
    jobs = secret_jobs.spooler.backend.list_jobs(task="demo.login")
    assert all(CANARY.encode() in j.payload for j in jobs)


def test_hostile_names_are_escaped_everywhere(client: FlaskClient, secret_jobs: Tasks) -> None:
    pages = every_page(client, secret_jobs)
    for url, html in pages.items():
        assert "<script>alert" not in html, url
        assert re.findall(r"<script\b[^>]*>", html) in ([], ['<script src="/spool/assets/dashboard.js" defer>']), url
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in html for html in pages.values())


def test_hostile_arguments_and_errors_are_escaped(client: FlaskClient, tasks: Tasks) -> None:
    payload = '"><img src=x onerror=alert(2)>'
    handle = tasks.hostile.spool(payload)
    tasks.spooler.drain()
    for url in ("/jobs", f"/jobs/{handle.id}"):
        html = text(client.get(PREFIX + url))
        assert "<img" not in html, url
        assert "&lt;img src=x onerror=alert(2)&gt;" in html, url


def test_custom_redaction_patterns(make_client: Callable[..., FlaskClient], tasks: Tasks) -> None:
    handle = tasks.secret_result.spool({"ssn": "123-45-6789", "Customer-Email": "a@b.c",
                                        "password": "shown-now"})
    client = make_client(access=full, redact=("SSN", re.compile(r"(?i)e-?mail")))
    html = text(client.get(f"{PREFIX}/jobs/{handle.id}"))
    assert "123-45-6789" not in html and "a@b.c" not in html
    assert "shown-now" in html  # redact= replaces the default list


def test_redaction_ignores_case_and_separators(client: FlaskClient, tasks: Tasks) -> None:
    handle = tasks.secret_result.spool({"X-API-Key": "k-1111", "apiKey": "k-2222",
                                        "DB_PASSWORD": "k-3333", "clientSecret": "k-4444",
                                        "user": "k-visible"})
    html = text(client.get(f"{PREFIX}/jobs/{handle.id}"))
    for value in ("k-1111", "k-2222", "k-3333", "k-4444"):
        assert value not in html
    assert "k-visible" in html


def test_a_secret_copied_into_another_argument_is_scrubbed(client: FlaskClient,
                                                           tasks: Tasks) -> None:
    handle = tasks.login.spool("bob", CANARY, note=f"remember {CANARY} please")
    for url in ("/jobs", f"/jobs/{handle.id}"):
        assert CANARY not in text(client.get(PREFIX + url))


def test_sqlite_store_pages_are_clean_too(tmp_path: object) -> None:
    from dashboard_helpers import make_tasks
    from flask import Flask

    from spoolhouse import FakeClock

    clock = FakeClock(1_700_000_000.0)
    tasks = make_tasks(Spooler(f"sqlite:///{tmp_path}/dash.db", clock=clock), clock)
    app = Flask("sqlite_dash")
    app.config["SECRET_KEY"] = "k"
    app.register_blueprint(tasks.spooler.dashboard_blueprint(access=full), url_prefix=PREFIX)
    client = app.test_client()
    tasks.login.spool("bob", CANARY)
    tasks.add.spool(1, 2)
    tasks.spooler.drain()
    try:
        tasks.spooler.backend.stats(since=0)
    except (AttributeError, NotImplementedError):  # pragma: no cover - depends on the backend's age
        pytest.skip("this SQLite backend has no stats() yet")
    pages = every_page(client, tasks)
    assert all(CANARY not in html for html in pages.values())
    assert "1 succeeded, 1 failed, 0 retried" in pages["/"]
    tasks.spooler.close()
