"""The Flask extension: ``spooler.init_app(app)``.

This package is the only part of Spoolhouse that imports Flask::

    from flask import Flask
    from spoolhouse import Spooler

    spooler = Spooler()                      # module level, no app

    @spooler.task
    def send_email(to: str) -> None: ...

    def create_app() -> Flask:
        app = Flask(__name__)
        spooler.init_app(app)                # or Spooler(app)
        return app

Run the workers with ``flask --app 'pkg:create_app()' spool worker``; each
worker process imports the app again and calls the factory, which calls
``init_app``, so every job runs inside a fresh app context of that app.

**Several apps, one spooler.** A spooler may be ``init_app``-ed on many apps
(a test suite makes one per test). The extension keeps a registry: for each
spooler, the apps bound to it in this process, held weakly. A job (and a
``@spooler.thread`` call) runs in the app that is current when it starts if
that app is bound to the spooler, otherwise in the app the spooler was bound
to *last*. The registry holds that last app strongly (in a worker process
nothing else does) and the others weakly. The store is per spooler, not per app: each ``init_app`` points
the spooler at that app's ``SPOOLHOUSE_URL``, so the last app bound decides
where jobs go. Give apps that must not share a store their own spooler.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, has_app_context

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..context import RunningJob
    from ..spooler import Spooler
    from .embedded import EmbeddedWorkers

__all__ = [
    "EXTENSION_KEY",
    "SpoolhouseState",
    "init_app",
    "get_state",
    "bound_app",
    "app_for_thread",
    "check_unbound",
    "start_embedded_workers",
]

log = logging.getLogger("spoolhouse.flask")

#: Key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "spoolhouse"
#: File name of the default store, in the app's instance folder.
DEFAULT_DB_NAME = "spoolhouse.db"


@dataclass
class SpoolhouseState:
    """What ``init_app`` keeps in ``app.extensions["spoolhouse"]``."""

    spooler: Spooler  # the spooler bound to this app
    url: str  # the store this app's jobs go to
    embedded: EmbeddedWorkers | None = None  # set when SPOOLHOUSE_EMBEDDED_WORKERS > 0


@dataclass
class _Binding:
    """The registry entry of one spooler: the apps bound to it, oldest first.

    The app bound last is held strongly: in a worker process nothing else
    holds it (the loader keeps the spooler it found in the app, not the app).
    The others are held weakly, so a test suite's many apps can be freed.
    """

    own_url: str | None  # the URL the spooler had before any init_app
    apps: list[weakref.ref[Flask]] = field(default_factory=list)
    last: Flask | None = None

    def add(self, app: Flask) -> None:
        self.apps.append(weakref.ref(app))
        self.last = app

    def live_apps(self) -> list[Flask]:
        alive = [app for app in (ref() for ref in self.apps) if app is not None]
        if len(alive) != len(self.apps):
            self.apps = [weakref.ref(app) for app in alive]
        return alive


_bindings: weakref.WeakKeyDictionary[Spooler, _Binding] = weakref.WeakKeyDictionary()
_bindings_lock = threading.Lock()


def _defaults(app: Flask, own_url: str | None) -> dict[str, Any]:
    return {
        "SPOOLHOUSE_URL": own_url or default_url(app),
        "SPOOLHOUSE_BACKEND_OPTIONS": {},
        "SPOOLHOUSE_IMMEDIATE": False,
        "SPOOLHOUSE_QUEUES": None,
        "SPOOLHOUSE_PROCESSES": 2,
        "SPOOLHOUSE_THREADS": 1,
        "SPOOLHOUSE_MAX_TASKS": None,
        "SPOOLHOUSE_SHUTDOWN_TIMEOUT": 30.0,
        "SPOOLHOUSE_APP": None,
        "SPOOLHOUSE_APP_CONTEXT": True,
        "SPOOLHOUSE_EMBEDDED_WORKERS": 0,
    }


def default_url(app: Flask) -> str:
    """``sqlite:///<instance folder>/spoolhouse.db``: the store when none is configured."""
    return "sqlite:///" + os.path.join(app.instance_path, DEFAULT_DB_NAME)


def init_app(spooler: Spooler, app: Flask) -> None:
    """Bind ``spooler`` to ``app``; called by ``spooler.init_app(app)`` and ``Spooler(app)``.

    Configuration, read from ``app.config`` (defaults are set with ``setdefault``,
    so set your values before calling this):

    ``SPOOLHOUSE_URL``
        Where jobs are stored. Default: the URL the spooler was created with,
        else ``sqlite:///<app.instance_path>/spoolhouse.db`` (the instance
        folder is created).
    ``SPOOLHOUSE_BACKEND_OPTIONS``
        Dict passed to the backend (``busy_timeout=``, ``prefix=``…). Default ``{}``.
    ``SPOOLHOUSE_IMMEDIATE``
        ``True`` runs each job inside ``.spool()`` (``inline://``, after a real
        serialize round trip): for tests. Overrides ``SPOOLHOUSE_URL`` and
        turns embedded workers off. Default ``False``.
    ``SPOOLHOUSE_QUEUES``
        Queues ``flask spool worker`` serves, in order: a list or a
        comma-separated string. Default ``None``: every registered task's queue.
    ``SPOOLHOUSE_PROCESSES``
        Default of ``flask spool worker --processes``. Default ``2``.
    ``SPOOLHOUSE_THREADS``
        Jobs run at once in each worker process (``--threads``). Default ``1``.
    ``SPOOLHOUSE_MAX_TASKS``
        Recycle a worker process after this many jobs (``--max-tasks``). Default ``None``.
    ``SPOOLHOUSE_SHUTDOWN_TIMEOUT``
        Seconds running jobs get to finish on stop (``--shutdown-timeout``). Default ``30``.
    ``SPOOLHOUSE_APP``
        What worker processes import to get this app, e.g. ``"pkg:create_app()"``.
        Default ``None``: taken from ``flask --app``/``FLASK_APP``, then from the
        ``SPOOLHOUSE_APP`` environment variable.
    ``SPOOLHOUSE_APP_CONTEXT``
        Push a fresh app context around every job attempt. Default ``True``.
    ``SPOOLHOUSE_EMBEDDED_WORKERS``
        ``N > 0`` runs N worker processes beside the web server (one set per
        store, whatever the number of web processes): see
        :mod:`spoolhouse.flask.embedded`. Default ``0``: run ``flask spool worker``.

    Raises :class:`~spoolhouse.errors.ConfigurationError` when the app already
    has Spoolhouse, or when a value is of the wrong kind.
    """
    if EXTENSION_KEY in app.extensions:
        raise ConfigurationError(
            f"Spoolhouse is already registered on app {app.name!r}; call spooler.init_app(app) "
            "once per app (Spooler(app) already calls it)"
        )
    with _bindings_lock:
        binding = _bindings.get(spooler)
        if binding is None:
            binding = _bindings[spooler] = _Binding(own_url=spooler.url)
            spooler.add_middleware(_app_context_middleware(spooler))
    config = app.config
    for key, value in _defaults(app, binding.own_url).items():
        config.setdefault(key, value)
    url = _configured_url(app)
    options = config["SPOOLHOUSE_BACKEND_OPTIONS"] or {}
    if not isinstance(options, dict):
        raise ConfigurationError(
            "SPOOLHOUSE_BACKEND_OPTIONS must be a dict of backend keyword arguments, "
            f"not {type(options).__name__}"
        )
    if url == default_url(app):
        os.makedirs(app.instance_path, exist_ok=True)
    others = [a for a in binding.live_apps() if a is not app]
    if spooler.url != url or options:
        if others and spooler.url is not None and spooler.url != url:
            log.info("spooler re-pointed from %s to %s by init_app(%r); the apps bound to it "
                     "before now store their jobs there too", spooler.url, url, app.name)
        spooler.configure(url, **options)
    state = SpoolhouseState(spooler=spooler, url=url)
    app.extensions[EXTENSION_KEY] = state
    with _bindings_lock:
        binding.add(app)

    from .cli import make_group

    app.cli.add_command(make_group())

    workers = _int_config(app, "SPOOLHOUSE_EMBEDDED_WORKERS")
    if workers and not config["SPOOLHOUSE_IMMEDIATE"]:
        from .embedded import setup_embedded

        setup_embedded(app, state, workers)


def _configured_url(app: Flask) -> str:
    if app.config["SPOOLHOUSE_IMMEDIATE"]:
        return "inline://"
    url = app.config["SPOOLHOUSE_URL"]
    if not isinstance(url, str) or not url:
        raise ConfigurationError(
            f"SPOOLHOUSE_URL must be a backend URL string such as sqlite:///path/to/spool.db "
            f"or redis://host:6379/0, not {url!r}"
        )
    return url


def _int_config(app: Flask, key: str) -> int:
    value = app.config.get(key)
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be an int, not {value!r}") from None
    if number < 0:
        raise ConfigurationError(f"{key} must be >= 0, not {number}")
    return number


def get_state(app: Flask | None = None) -> SpoolhouseState:
    """The Spoolhouse state of ``app`` (default: the current app)."""
    if app is None:
        if not has_app_context():
            raise ConfigurationError(
                "no Flask app is current; pass the app, or work inside "
                "`with app.app_context():`"
            )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    assert app is not None
    state = app.extensions.get(EXTENSION_KEY)
    if state is None:
        raise ConfigurationError(
            f"Spoolhouse is not registered on app {app.name!r}; call spooler.init_app(app) "
            "in your app factory"
        )
    return state  # type: ignore[no-any-return]


def bound_app(spooler: Spooler | None) -> Flask | None:
    """The app a job of ``spooler`` runs in (see the module docstring), or ``None``."""
    if has_app_context():
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get(EXTENSION_KEY)
        if spooler is None or (state is not None and state.spooler is spooler):
            return app
    if spooler is None:
        return None
    with _bindings_lock:
        binding = _bindings.get(spooler)
        apps = binding.live_apps() if binding is not None else []
    return apps[-1] if apps else None


def app_for_thread(spooler: Spooler | None) -> Flask | None:
    """The app a ``@spooler.thread`` call runs in: the current app, else the spooler's."""
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined, no-any-return]
    return bound_app(spooler)


def _app_context_middleware(spooler: Spooler) -> Callable[[RunningJob, Callable[[], Any]], Any]:
    # Holds the spooler weakly: the middleware lives in the spooler's own list.
    ref = weakref.ref(spooler)

    def app_context(running: RunningJob, call_next: Callable[[], Any]) -> Any:
        app = bound_app(ref())
        if app is None or not app.config.get("SPOOLHOUSE_APP_CONTEXT", True):
            return call_next()
        # A fresh context per attempt, even when one is already pushed (inline
        # mode inside a request): its own `g`, its own teardown, like a worker.
        with app.app_context():
            return call_next()

    return app_context


def check_unbound(spooler: Spooler) -> None:
    """Refuse to guess a store for a spooler that has no URL and no app.

    A module-level ``Spooler()`` gets its store from ``init_app``. Spooling
    through it before that (a script that imports the tasks but never calls
    the app factory) would write to ``./spoolhouse.db`` in whatever directory
    it runs from, where no worker looks. Meant to be called by the spooler
    when it opens its backend with no URL in a process that uses Flask.
    """
    if spooler.url is not None:
        return
    with _bindings_lock:
        binding = _bindings.get(spooler)
        bound = binding is not None and bool(binding.live_apps())
    if bound:
        return
    if has_app_context():
        name = current_app.name
        raise ConfigurationError(
            f"this Spooler has no store: it was never bound to app {name!r}; call "
            "spooler.init_app(app) in the app factory (or create it as Spooler(app))"
        )
    raise ConfigurationError(
        "this Spooler has no store: it has no URL and no Flask app; call "
        "spooler.init_app(app) (then spool inside a request or `with app.app_context():`), "
        "or give it a URL: Spooler('sqlite:///path/to/spool.db')"
    )


def start_embedded_workers(app: Flask) -> bool:
    """Start the embedded workers of ``app`` now, in this process.

    For servers that give the app no request to start them on first, e.g. from
    gunicorn's ``post_worker_init`` hook. Needs ``SPOOLHOUSE_EMBEDDED_WORKERS > 0``.
    Returns ``False`` when this process must not run them (a worker process,
    the reloader's watcher). Only one process per store runs the workers; the
    others wait to take over.
    """
    state = get_state(app)
    if state.embedded is None:
        raise ConfigurationError(
            f"app {app.name!r} has no embedded workers; set SPOOLHOUSE_EMBEDDED_WORKERS = N "
            "before spooler.init_app(app)"
        )
    return state.embedded.start()
