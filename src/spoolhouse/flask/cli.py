"""``flask spool …``: the ``spoolhouse`` commands, run against the Flask app.

The commands are the standalone CLI's own (``spoolhouse.cli.add_commands``);
this group only builds their :class:`~spoolhouse.cli.CliState` from the app
Flask loaded, and turns the app's ``SPOOLHOUSE_*`` settings into option
defaults (an option given on the command line still wins).

Worker processes import the app again, so they need an import string: it is
``SPOOLHOUSE_APP`` when set, else what ``flask --app`` / ``FLASK_APP`` named,
made importable (``pkg:create_app`` becomes ``pkg:create_app()``, a bare
module becomes ``module:app`` or ``module:create_app()``).
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup, ScriptInfo, prepare_import

from ..cli import CliState, add_commands
from ..errors import ConfigurationError

__all__ = ["make_group", "worker_app_ref"]

_APP_NAMES = ("app", "application")
_FACTORY_NAMES = ("create_app", "make_app")


def make_group() -> click.Group:
    """A fresh ``spool`` group (one per app: click groups keep their commands)."""

    @click.group("spool", cls=AppGroup)
    @click.pass_context
    def spool(ctx: click.Context) -> None:
        """Spoolhouse: run workers, inspect and manage jobs."""
        from . import get_state

        info = ctx.find_object(ScriptInfo)
        app = _current_app(info)
        state = get_state(app)
        try:
            ref: str | None = worker_app_ref(app, info.app_import_path if info else None)
        except ConfigurationError as exc:
            if ctx.invoked_subcommand == "worker":
                raise click.UsageError(str(exc)) from exc
            ref = None
        ctx.obj = CliState(app_ref=ref, load=lambda: state.spooler)
        defaults = dict(ctx.default_map or {})
        worker_defaults = _worker_defaults(app)
        worker_defaults.update(defaults.get("worker") or {})
        defaults["worker"] = worker_defaults
        ctx.default_map = defaults

    add_commands(spool)
    return spool


def _current_app(info: ScriptInfo | None) -> Flask:
    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined, no-any-return]
    if info is None:
        raise click.UsageError("no Flask app: run this as `flask --app pkg:create_app spool …`")
    return info.load_app()


def _worker_defaults(app: Flask) -> dict[str, Any]:
    config = app.config
    out: dict[str, Any] = {
        "processes": config.get("SPOOLHOUSE_PROCESSES", 2),
        "threads": config.get("SPOOLHOUSE_THREADS", 1),
        "shutdown_timeout": config.get("SPOOLHOUSE_SHUTDOWN_TIMEOUT", 30.0),
    }
    queues = queue_list(config.get("SPOOLHOUSE_QUEUES"))
    if queues:
        out["queues"] = ",".join(queues)
    if config.get("SPOOLHOUSE_MAX_TASKS"):
        out["max_tasks"] = config["SPOOLHOUSE_MAX_TASKS"]
    return out


def queue_list(value: object) -> tuple[str, ...] | None:
    """``SPOOLHOUSE_QUEUES`` as a tuple: accepts a list or ``"a,b"``; ``None`` when unset."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        items = [q.strip() for q in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(q).strip() for q in value]
    else:
        raise ConfigurationError(
            f"SPOOLHOUSE_QUEUES must be a list of queue names or 'a,b', not {value!r}"
        )
    return tuple(q for q in items if q) or None


def worker_app_ref(app: Flask, import_path: str | None = None) -> str:
    """What worker processes import to get ``app``, for ``spoolhouse.loader``.

    In order: ``app.config["SPOOLHOUSE_APP"]``; ``import_path`` (from
    ``flask --app``/``FLASK_APP``) made loadable; the ``SPOOLHOUSE_APP``
    environment variable; the module the app was created in, when it holds
    the app or a factory. Raises ``ConfigurationError`` naming the setting.
    """
    explicit = app.config.get("SPOOLHOUSE_APP")
    if explicit:
        return str(explicit)
    if import_path is None:
        import_path = os.environ.get("FLASK_APP") or None
    if import_path:
        return _loadable(import_path, app)
    env = os.environ.get("SPOOLHOUSE_APP")
    if env:
        return env
    for module_name in (app.import_name, "wsgi", "app"):
        if module_name == "__main__":  # a worker cannot import a script by that name
            continue
        ref = _ref_in_module(module_name, app)
        if ref is not None:
            return ref
    raise ConfigurationError(
        f"cannot tell how worker processes import app {app.name!r}; set "
        "app.config['SPOOLHOUSE_APP'] = 'pkg:create_app()' (or 'pkg.module:app'), or run "
        "`flask --app 'pkg:create_app()' …`"
    )


def _loadable(import_path: str, app: Flask) -> str:
    path, sep, name = import_path.partition(":")
    module_name = prepare_import(path) if _looks_like_path(path) else path
    if not sep:
        return _ref_in_module(module_name, app) or module_name
    name = name.strip()
    if "(" in name:
        if name.endswith("()"):
            return f"{module_name}:{name}"
        raise ConfigurationError(
            f"worker processes cannot call {name!r} (a factory with arguments); set "
            "app.config['SPOOLHOUSE_APP'] to a factory without arguments, e.g. "
            "'pkg:create_worker_app()', or to 'pkg.module:app'"
        )
    module = sys.modules.get(module_name)
    obj = getattr(module, name, None) if module is not None else None
    if inspect.isfunction(obj):
        return f"{module_name}:{name}()"
    return f"{module_name}:{name}"


def _looks_like_path(path: str) -> bool:
    return path.endswith(".py") or os.sep in path or (os.altsep is not None and os.altsep in path)


def _ref_in_module(module_name: str, app: Flask) -> str | None:
    module = sys.modules.get(module_name)
    if module is None:
        return None
    for attr in _APP_NAMES:
        if getattr(module, attr, None) is app:
            return f"{module_name}:{attr}"
    for attr in _FACTORY_NAMES:
        if inspect.isfunction(getattr(module, attr, None)):
            return f"{module_name}:{attr}()"
    return None
