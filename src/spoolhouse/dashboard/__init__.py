"""The web dashboard: queues, jobs, failures and schedules, with retry and cancel.

Mount it in a Flask app behind your own login::

    def dashboard_access(request):
        if not current_user.is_authenticated:
            return None                                  # 403
        return "full" if current_user.is_admin else "read-only"

    app.register_blueprint(
        spooler.dashboard_blueprint(access=dashboard_access), url_prefix="/spool"
    )

or serve it alone: :func:`wsgi_app` for any WSGI host, :func:`serve` (what
``spoolhouse dashboard`` runs) for a quick look on your own machine.

Without ``access=`` (or ``insecure_local=True``) every request is refused with
403. Every POST carries a CSRF token, signed with ``secret_key=``, else the
app's ``SECRET_KEY``, else a random per-process secret. See ``docs/dashboard.md``.
Needs Flask: ``pip install 'spoolhouse[flask]'``.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..redact import DEFAULT_REDACT

if TYPE_CHECKING:
    from flask import Blueprint, Flask
    from werkzeug.serving import BaseWSGIServer

    from ..spooler import Spooler

__all__ = ["blueprint", "wsgi_app", "make_server", "serve", "DEFAULT_REDACT"]

#: ``access(request) -> "full" | "read-only" | "forbidden" | None | Response``
AccessCheck = Callable[[Any], Any]


def _require_flask() -> None:
    try:
        import flask  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(
            "the dashboard needs Flask: pip install 'spoolhouse[flask]'"
        ) from exc


def blueprint(
    spooler: Spooler,
    *,
    access: AccessCheck | None = None,
    read_only: bool = False,
    insecure_local: bool = False,
    redact: Iterable[str | re.Pattern[str]] = DEFAULT_REDACT,
    page_size: int = 50,
    refresh: float = 5.0,
    secret_key: str | bytes | None = None,
    name: str = "spoolhouse_dashboard",
) -> Blueprint:
    """The dashboard as a Flask blueprint; register it at a prefix of your choice.

    :param access: ``access(request)`` decides each request: ``"full"`` (view and
        act), ``"read-only"`` (no buttons; POSTs get 403), ``"forbidden"`` or
        ``None`` (403). It may also return a response to send instead (a 401
        with ``WWW-Authenticate``, a redirect to your login page) or raise
        ``flask.abort(...)``. Without it every request gets 403.
    :param read_only: cap everyone at read-only, whatever ``access`` says.
    :param insecure_local: no access check, but only for requests from this
        machine (loopback address, ``localhost`` Host, no proxy headers). For
        development; never with ``access``.
    :param redact: key patterns whose values are never shown (in arguments,
        results, headers) and are scrubbed from error messages and tracebacks.
        Strings match case-insensitively, ignoring ``_`` and ``-``; compiled
        regexes are searched in the key. Replaces the default list; extend it
        with ``redact=(*DEFAULT_REDACT, "ssn")``.
    :param page_size: jobs per list page (at most 500).
    :param refresh: seconds between live updates of the overview and of a
        running job's page (0: none).
    :param secret_key: signs CSRF tokens; defaults to the app's ``SECRET_KEY``,
        else a random secret of this process (then forms fail after a restart,
        and across processes of a multi-process server: set one).
    :param name: the blueprint's name, to mount two dashboards in one app.
    """
    _require_flask()
    from .views import build_blueprint

    return build_blueprint(
        spooler, access=access, read_only=read_only, insecure_local=insecure_local,
        redact=redact, page_size=page_size, refresh=refresh, secret_key=secret_key, name=name,
    )


def wsgi_app(spooler: Spooler, **options: Any) -> Flask:
    """A standalone WSGI app serving the dashboard at its root.

    Takes the options of :func:`blueprint`. Mount it under a prefix of a
    non-Flask host with ``werkzeug.middleware.dispatcher.DispatcherMiddleware``,
    or run it with any WSGI server (``waitress``, ``gunicorn``). Without
    ``secret_key=`` it makes a random one, so run one process (or pass one).
    """
    _require_flask()
    from flask import Flask

    app = Flask("spoolhouse.dashboard", static_folder=None)
    app.config["SECRET_KEY"] = options.pop("secret_key", None) or secrets.token_hex(32)
    app.register_blueprint(blueprint(spooler, **options))
    return app


def make_server(
    spooler: Spooler, *, host: str = "127.0.0.1", port: int = 8077, **options: Any
) -> BaseWSGIServer:
    """A threaded HTTP server for :func:`wsgi_app`, bound but not yet serving.

    Call ``serve_forever()`` (in a thread, for tests) and ``shutdown()``;
    ``port=0`` picks a free port (read ``server_port``).
    """
    from werkzeug.serving import make_server as werkzeug_server

    return werkzeug_server(host, port, wsgi_app(spooler, **options), threaded=True)


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve(
    spooler: Spooler,
    *,
    host: str = "127.0.0.1",
    port: int = 8077,
    read_only: bool = False,
    insecure_local: bool = False,
    access: AccessCheck | None = None,
) -> None:
    """Serve the dashboard until interrupted (``spoolhouse dashboard``); prints its URL.

    Refuses to start without ``access`` or ``insecure_local``, since it would
    refuse every request.
    """
    if access is None and not insecure_local:
        raise ConfigurationError(
            "the dashboard needs an access check: pass --insecure-local to serve it to this "
            "machine only (development), or mount spooler.dashboard_blueprint(access=...) in "
            "your app behind your own login"
        )
    server = make_server(spooler, host=host, port=port, read_only=read_only,
                         insecure_local=insecure_local, access=access)
    mode = " (read-only)" if read_only else ""
    print(f"Spoolhouse dashboard{mode} on {_url(host, server.server_port)} "
          f"- store {spooler.backend.url}", flush=True)
    if insecure_local:
        print("insecure-local: no login; only requests from this machine are answered",
              file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
