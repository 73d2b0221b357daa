"""Huey, with its defaults: ``SqliteHuey`` (``SqliteStorage``: WAL, ``fsync=None`` so
SQLite's own default ``synchronous``, FULL in this build) or ``RedisHuey`` (blocking BRPOP).

Worker: ``huey_consumer huey_app.huey -k process -w 2 -q``.
"""

from __future__ import annotations

import os

import probe
from huey import RedisHuey, SqliteHuey

VARIANT = os.environ.get("BENCH_VARIANT", "sqlite")
if VARIANT == "redis":
    huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])
else:
    huey = SqliteHuey("bench", filename=os.environ["BENCH_DB"])


@huey.task()
def noop(i: int) -> None:
    probe.hit(i)


def enqueue(i: int) -> None:
    noop(i)


def fill(n: int) -> None:
    if VARIANT != "redis":
        # Filling is not measured: skip the per-commit fsync to save time.
        huey.storage.conn.execute("pragma synchronous=0")
    for i in range(n):
        noop(i)


def close() -> None:
    pass
