"""The machine's own limits for one enqueue per call, measured in the same run as the systems.

Not a job system: the cheapest durable write each store allows, one call at a time,
so that an enqueue rate can be read as a share of what the machine can do at all.

``BENCH_VARIANT``:

* ``sqlite-full``: a one-row ``INSERT`` into a two-column table and its ``COMMIT``, in
  WAL mode with ``synchronous=FULL`` (one fsync per commit), on a fresh file in the
  run's directory: the ceiling of a single-job enqueue with Spoolhouse's defaults.
* ``sqlite-normal``: the same with ``synchronous=NORMAL`` (no fsync per commit).
* ``redis``: one ``LPUSH`` of a short value per call through redis-py (with hiredis,
  as Spoolhouse uses it): one round trip, the ceiling of any single-call enqueue on
  Redis.

Runs in the project's interpreter (standard library, plus redis-py for ``redis``).
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

VARIANT = os.environ.get("BENCH_VARIANT", "sqlite-full")

_conn: sqlite3.Connection | None = None
_redis: Any = None


def _sqlite() -> sqlite3.Connection:
    global _conn
    if _conn is None:
        _conn = sqlite3.connect(os.environ["BENCH_DB"], isolation_level=None)
        _conn.execute("PRAGMA journal_mode = WAL")
        sync = "NORMAL" if VARIANT == "sqlite-normal" else "FULL"
        _conn.execute(f"PRAGMA synchronous = {sync}")
        _conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    return _conn


def enqueue(i: int) -> None:
    if VARIANT == "redis":
        global _redis
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        _redis.lpush("bench:limit", i)
        return
    conn = _sqlite()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (v) VALUES (?)", (i,))
    conn.execute("COMMIT")


def close() -> None:
    if _conn is not None:
        _conn.close()
    if _redis is not None:
        _redis.close()
