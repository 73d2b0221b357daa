"""Find the Spooler an operator named on the command line (``--app pkg.module:spooler``).

This is the one place that imports a module by a name given at run time; the
name comes from the operator, never from a stored job.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from .errors import ConfigurationError
from .spooler import Spooler


def load_object(ref: str) -> Any:
    """Import ``module`` or ``module:attr`` (``attr`` may be ``factory()``)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(
                f"cannot import {module_name!r} for --app {ref!r}: {exc}; run from the "
                "directory that holds it or add it to PYTHONPATH"
            ) from exc
        raise
    if not attr:
        return module
    call = attr.endswith("()")
    name = attr[:-2] if call else attr
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {name!r} (--app {ref!r})") from None
    if call:
        obj = obj()
    return obj


def spooler_from(obj: Any, ref: str = "") -> Spooler:
    """The Spooler in ``obj``: a Spooler, a Flask app with the extension, or a module holding one."""
    if isinstance(obj, Spooler):
        return obj
    extensions = getattr(obj, "extensions", None)
    if isinstance(extensions, dict) and "spoolhouse" in extensions:
        state = extensions["spoolhouse"]
        spooler = getattr(state, "spooler", state)
        if isinstance(spooler, Spooler):
            return spooler
    if hasattr(obj, "__dict__"):
        found = [v for v in vars(obj).values() if isinstance(v, Spooler)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ConfigurationError(
                f"{ref or obj!r} holds several Spoolers; name one: --app module:attribute"
            )
        if callable(getattr(obj, "create_app", None)):
            return spooler_from(obj.create_app(), ref)
        # a tasks module (uWSGI compat): its tasks all belong to one spooler
        owners = {
            id(s): s
            for v in vars(obj).values()
            if isinstance(s := getattr(v, "spooler", None), Spooler)
        }
        if len(owners) == 1:
            return next(iter(owners.values()))
    raise ConfigurationError(
        f"no Spooler found in {ref or obj!r}; pass --app module:spooler (a Spooler), or "
        "module:create_app() for a Flask app that called spooler.init_app(app)"
    )


def load_spooler(ref: str) -> Spooler:
    return spooler_from(load_object(ref), ref)
