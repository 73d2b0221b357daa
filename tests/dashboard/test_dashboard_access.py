"""Who may see and act: the access callable, read-only, insecure_local, and CSRF on every POST."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from dashboard_helpers import PREFIX, Tasks, csrf_token, full, read_only, text
from flask import Response, abort
from flask.testing import FlaskClient

from spoolhouse import JobState
from spoolhouse.errors import ConfigurationError

PAGES = ["/", "/jobs", "/jobs?state=failed", "/periodic", "/live/overview"]


def failed_job(tasks: Tasks) -> str:
    handle = tasks.login.spool("bob", "pw")
    tasks.spooler.drain()
    assert handle.status() == "failed"
    return handle.id


# -- no access check ---------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_without_an_access_check_every_page_is_forbidden(
    make_client: Callable[..., FlaskClient], page: str
) -> None:
    client = make_client()
    response = client.get(PREFIX + page)
    assert response.status_code == 403
    body = text(response)
    assert "access=" in body and "insecure_local=True" in body


def test_without_an_access_check_job_pages_and_posts_are_forbidden(
    make_client: Callable[..., FlaskClient], tasks: Tasks
) -> None:
    job_id = failed_job(tasks)
    client = make_client()
    assert client.get(f"{PREFIX}/jobs/{job_id}").status_code == 403
    assert client.post(f"{PREFIX}/jobs/{job_id}/retry").status_code == 403
    assert tasks.spooler.backend.get(job_id).state is JobState.FAILED  # type: ignore[union-attr]


def test_static_assets_need_no_access(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client()
    css = client.get(f"{PREFIX}/assets/dashboard.css")
    js = client.get(f"{PREFIX}/assets/dashboard.js")
    assert css.status_code == 200 and js.status_code == 200
    assert "data-live" in text(js)
    css.close()
    js.close()


# -- the access callable -------------------------------------------------------------------
@pytest.mark.parametrize("verdict", [None, "forbidden", "admin", True, 1])
def test_anything_but_full_or_read_only_is_forbidden(
    make_client: Callable[..., FlaskClient], verdict: Any
) -> None:
    client = make_client(access=lambda request: verdict)
    response = client.get(PREFIX + "/")
    assert response.status_code == 403
    assert "refused" in text(response)


def test_the_access_callable_sees_the_request(make_client: Callable[..., FlaskClient]) -> None:
    def by_header(request: Any) -> str | None:
        return "full" if request.headers.get("X-Ops") == "yes" else None

    client = make_client(access=by_header)
    assert client.get(PREFIX + "/").status_code == 403
    assert client.get(PREFIX + "/", headers={"X-Ops": "yes"}).status_code == 200


def test_the_access_callable_may_answer_with_a_response(
    make_client: Callable[..., FlaskClient],
) -> None:
    def basic(request: Any) -> Any:
        auth = request.authorization
        if auth is not None and auth.username == "ops" and auth.password == "s3cret":
            return "full"
        return Response("login", 401, {"WWW-Authenticate": 'Basic realm="spool"'})

    client = make_client(access=basic)
    refused = client.get(PREFIX + "/")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="spool"'
    assert client.get(PREFIX + "/", auth=("ops", "s3cret")).status_code == 200
    assert client.get(PREFIX + "/", auth=("ops", "wrong")).status_code == 401


def test_the_access_callable_may_abort(make_client: Callable[..., FlaskClient]) -> None:
    def redirect_to_login(request: Any) -> str:
        abort(Response("", 302, {"Location": "/login?next=" + request.path}))

    response = make_client(access=redirect_to_login).get(PREFIX + "/jobs")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/spool/jobs"


# -- read-only -----------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{"access": read_only}, {"access": full, "read_only": True}])
def test_read_only_sees_no_action_and_cannot_post(
    make_client: Callable[..., FlaskClient], tasks: Tasks, options: dict[str, Any]
) -> None:
    job_id = failed_job(tasks)
    client = make_client(**options)
    for page in (f"/jobs/{job_id}", "/jobs?state=failed", "/"):
        body = text(client.get(PREFIX + page))
        assert 'method="post"' not in body
        assert "csrf_token" not in body
        assert "read-only" in body
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": "x"})
    assert response.status_code == 403
    assert "Read-only" in text(response)
    assert tasks.spooler.backend.get(job_id).state is JobState.FAILED  # type: ignore[union-attr]


# -- insecure_local ------------------------------------------------------------------------
def test_insecure_local_serves_this_machine(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(insecure_local=True)
    assert client.get(PREFIX + "/").status_code == 200
    assert client.get(PREFIX + "/", environ_overrides={"REMOTE_ADDR": "::1"}).status_code == 200
    assert client.get(PREFIX + "/", headers={"Host": "127.0.0.1:8077"}).status_code == 200


@pytest.mark.parametrize(
    ("environ", "headers"),
    [
        ({"REMOTE_ADDR": "10.1.2.3"}, {}),
        ({"REMOTE_ADDR": "192.168.1.20"}, {}),
        ({}, {"X-Forwarded-For": "203.0.113.9"}),
        ({}, {"Forwarded": "for=203.0.113.9"}),
        ({}, {"Host": "evil.example"}),  # DNS rebinding: a foreign name pointing at 127.0.0.1
        ({}, {"Host": "evil.example:8077"}),
    ],
)
def test_insecure_local_refuses_everything_else(
    make_client: Callable[..., FlaskClient], environ: dict[str, str], headers: dict[str, str]
) -> None:
    client = make_client(insecure_local=True)
    response = client.get(PREFIX + "/", environ_overrides=environ, headers=headers)
    assert response.status_code == 403
    assert "this machine only" in text(response)


def test_options_are_checked(make_client: Callable[..., FlaskClient]) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        make_client(access=full, insecure_local=True)
    with pytest.raises(ConfigurationError, match="page_size"):
        make_client(access=full, page_size=0)
    with pytest.raises(ConfigurationError, match="access="):
        make_client(access="full")
    with pytest.raises(ConfigurationError, match="refresh"):
        make_client(access=full, refresh=0.01)
    with pytest.raises(ConfigurationError, match="redact="):
        make_client(access=full, redact="password")


# -- CSRF ----------------------------------------------------------------------------------
def test_post_without_a_token_is_refused(client: FlaskClient, tasks: Tasks) -> None:
    job_id = failed_job(tasks)
    csrf_token(client)  # the cookie is there; only the form field is missing
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry")
    assert response.status_code == 403
    assert "CSRF" in text(response)
    assert tasks.spooler.backend.get(job_id).state is JobState.FAILED  # type: ignore[union-attr]


@pytest.mark.parametrize("forged", ["", "nope", "123.abc", "1700000000." + "0" * 64])
def test_post_with_a_bad_token_is_refused(client: FlaskClient, tasks: Tasks, forged: str) -> None:
    job_id = failed_job(tasks)
    csrf_token(client)
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": forged})
    assert response.status_code == 403
    assert tasks.spooler.backend.get(job_id).state is JobState.FAILED  # type: ignore[union-attr]


def test_a_token_is_bound_to_its_browser(
    make_client: Callable[..., FlaskClient], tasks: Tasks
) -> None:
    job_id = failed_job(tasks)
    victim, attacker = make_client(access=full), make_client(access=full)
    stolen = csrf_token(attacker)  # valid for the attacker's own cookie only
    csrf_token(victim)
    response = victim.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": stolen})
    assert response.status_code == 403


def test_a_token_without_its_cookie_is_refused(client: FlaskClient, tasks: Tasks) -> None:
    job_id = failed_job(tasks)
    token = csrf_token(client)
    client.delete_cookie("spoolhouse_csrf", path=PREFIX + "/")
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token})
    assert response.status_code == 403


def test_a_token_signed_with_another_secret_is_refused(
    make_client: Callable[..., FlaskClient], tasks: Tasks
) -> None:
    job_id = failed_job(tasks)
    a = make_client(access=full, secret="one")
    token = csrf_token(a)
    cookie = a.get_cookie("spoolhouse_csrf", path=PREFIX + "/")
    assert cookie is not None
    b = make_client(access=full, secret="two")
    b.set_cookie("spoolhouse_csrf", cookie.value, path=PREFIX + "/")
    assert b.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token}).status_code == 403
    assert a.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token}).status_code == 303


def test_an_expired_token_is_refused(
    client: FlaskClient, tasks: Tasks, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spoolhouse.dashboard.views as views

    job_id = failed_job(tasks)
    real = views.time.time
    monkeypatch.setattr(views.time, "time", lambda: real() - views.CSRF_MAX_AGE - 10)
    token = csrf_token(client)
    monkeypatch.setattr(views.time, "time", real)
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token})
    assert response.status_code == 403
    assert "expired" in text(response)


def test_a_cross_origin_post_is_refused_even_with_a_token(client: FlaskClient, tasks: Tasks) -> None:
    job_id = failed_job(tasks)
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    same = client.post(f"{PREFIX}/jobs/{job_id}/retry", data={"csrf_token": token},
                       headers={"Origin": "http://localhost"})
    assert same.status_code == 303


def test_a_token_may_come_in_a_header(client: FlaskClient, tasks: Tasks) -> None:
    job_id = failed_job(tasks)
    token = csrf_token(client)
    response = client.post(f"{PREFIX}/jobs/{job_id}/retry", headers={"X-CSRF-Token": token})
    assert response.status_code == 303


def test_the_csrf_cookie_is_http_only_strict_and_scoped(client: FlaskClient) -> None:
    response = client.get(PREFIX + "/jobs?state=failed")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("spoolhouse_csrf=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/spool/" in cookie
    # later pages reuse the cookie
    assert "Set-Cookie" not in client.get(PREFIX + "/jobs?state=failed").headers


def test_security_headers(client: FlaskClient) -> None:
    response = client.get(PREFIX + "/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"


def test_no_inline_script_or_style(client: FlaskClient, tasks: Tasks) -> None:
    """The CSP forbids inline code; the pages must not need any."""
    job_id = failed_job(tasks)
    for page in ("/", "/jobs", f"/jobs/{job_id}", "/periodic"):
        body = text(client.get(PREFIX + page))
        assert not re.search(r"<script(?![^>]*\bsrc=)", body), page
        assert " style=" not in body and "<style" not in body, page
        assert not re.search(r"<[^>]*\son[a-z]+=", body), page
