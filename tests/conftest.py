"""Shared fixtures: backends by name, service URLs from the environment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from spoolhouse.backends import open_backend
from spoolhouse.backends.base import Backend

REDIS_URL = os.environ.get("SPOOLHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def redis_available() -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
    except Exception:
        return False
    return True


def require_redis() -> None:
    """Skip (locally) or fail (in CI) when no Redis server answers."""
    if redis_available():
        return
    message = f"no Redis server answers at {REDIS_URL} (set SPOOLHOUSE_TEST_REDIS_URL)"
    if IN_CI:
        pytest.fail(message + "; in CI a missing service is a failure")
    pytest.skip(message)


def make_backend(kind: str, tmp_path: object) -> Backend:
    if kind == "memory":
        return open_backend("memory://")
    if kind == "sqlite":
        return open_backend(f"sqlite:///{tmp_path}/spool.db")
    if kind == "redis":
        require_redis()
        try:
            from spoolhouse.backends.redis import RedisBackend  # noqa: F401
        except ImportError:
            pytest.skip("the Redis backend is not built yet")
        return open_backend(REDIS_URL, prefix=f"shtest-{uuid.uuid4().hex[:12]}")
    raise ValueError(kind)


def drop_backend(backend: Backend) -> None:
    """Remove what a test backend wrote to a shared service, then close it."""
    destroy = getattr(backend, "destroy", None)
    if callable(destroy):
        destroy()
    backend.close()


BACKEND_KINDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BACKEND_KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Backend]:
    """Every backend in turn; the contract suite runs unchanged against each."""
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        drop_backend(b)
