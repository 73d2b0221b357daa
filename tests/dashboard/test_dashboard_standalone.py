"""The standalone app and server, for non-Flask hosts and ``spoolhouse dashboard``."""

from __future__ import annotations

import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from dashboard_helpers import Tasks, full

from spoolhouse import Spooler
from spoolhouse.dashboard import make_server, serve, wsgi_app
from spoolhouse.errors import ConfigurationError


def test_wsgi_app_serves_at_its_root(spooler: Spooler, tasks: Tasks) -> None:
    tasks.add.spool(1, 2)
    client = wsgi_app(spooler, insecure_local=True).test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="/assets/dashboard.css"' in response.get_data(as_text=True)
    assert client.get("/assets/dashboard.css").status_code == 200
    # the per-process secret signs tokens that the same app accepts
    html = client.get("/jobs?state=failed").get_data(as_text=True)
    assert 'name="csrf_token"' in html


def test_wsgi_app_under_a_dispatcher(spooler: Spooler) -> None:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    host = Flask("host")
    host.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        host.wsgi_app, {"/ops/spool": wsgi_app(spooler, access=full, secret_key="k")}
    )
    client = host.test_client()
    html = client.get("/ops/spool/").get_data(as_text=True)
    assert 'href="/ops/spool/jobs"' in html


def test_wsgi_app_without_an_access_check_refuses(spooler: Spooler) -> None:
    response = wsgi_app(spooler).test_client().get("/")
    assert response.status_code == 403


def test_serve_refuses_to_start_without_an_access_check(spooler: Spooler) -> None:
    with pytest.raises(ConfigurationError, match="--insecure-local"):
        serve(spooler, port=0)


def test_serve_prints_its_url(spooler: Spooler, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from werkzeug.serving import BaseWSGIServer

    def interrupted(self: Any, *args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(BaseWSGIServer, "serve_forever", interrupted)
    serve(spooler, host="127.0.0.1", port=0, insecure_local=True, read_only=True)
    out = capsys.readouterr()
    assert "Spoolhouse dashboard (read-only) on http://127.0.0.1:" in out.out
    assert "memory://" in out.out
    assert "only requests from this machine" in out.err


def test_make_server_answers_over_http(spooler: Spooler) -> None:
    server = make_server(spooler, host="127.0.0.1", port=0, insecure_local=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            assert response.status == 200
            assert b"Overview" in response.read()
        request = urllib.request.Request(base + "/jobs/x/retry", method="POST", data=b"")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403  # no CSRF token
        refused.value.close()
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_without_flask_the_error_names_the_extra(spooler: Spooler,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "flask", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'spoolhouse\[flask\]'"):
        spooler.dashboard_blueprint(access=full)
    with pytest.raises(ConfigurationError, match=r"spoolhouse\[flask\]"):
        wsgi_app(spooler, access=full)


def test_two_dashboards_in_one_app(tasks: Tasks) -> None:
    from flask import Flask

    other = Spooler("memory://")
    app = Flask("two")
    app.config["SECRET_KEY"] = "k"
    app.register_blueprint(tasks.spooler.dashboard_blueprint(access=full), url_prefix="/a")
    app.register_blueprint(other.dashboard_blueprint(access=full, name="second"), url_prefix="/b")
    tasks.add.spool(1, 1)
    client = app.test_client()
    assert "default" in client.get("/a/").get_data(as_text=True)
    b = client.get("/b/").get_data(as_text=True)
    assert "No jobs are stored." in b and 'href="/b/jobs"' in b
