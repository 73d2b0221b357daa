"""Backends and the URL that picks one.

``memory://`` (tests), ``sqlite:///relative.db`` or ``sqlite:////absolute.db``
(the default), ``redis://host:6379/0`` (many hosts).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import Backend, CancelResult, LeaseState

__all__ = ["Backend", "CancelResult", "LeaseState", "open_backend"]

DEFAULT_URL = "sqlite:///spoolhouse.db"


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend named by ``url``. Connections are made lazily, per process."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url, **options)
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisBackend
        except ImportError as exc:  # pragma: no cover - depends on installed extras
            raise ConfigurationError(
                "the Redis backend needs redis-py: pip install 'spoolhouse[redis]'"
            ) from exc
        return RedisBackend(url, **options)
    raise ConfigurationError(
        f"unknown backend URL {url!r}: use sqlite:///path/to/spool.db, redis://host:6379/0 "
        "or memory://"
    )
