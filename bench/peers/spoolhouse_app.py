"""Spoolhouse, as the benchmark runs it: SQLite (its defaults: WAL, synchronous=FULL) or Redis.

``BENCH_VARIANT``: ``sqlite`` (defaults), ``sqlite-normal`` (``?synchronous=NORMAL``)
or ``redis``. Worker: ``python -m spoolhouse --app spoolhouse_app:spooler worker``.
"""

from __future__ import annotations

import os

import probe

from spoolhouse import Spooler

VARIANT = os.environ.get("BENCH_VARIANT", "sqlite")
if VARIANT == "redis":
    spooler = Spooler(os.environ["BENCH_REDIS_URL"], prefix="bench")
elif VARIANT == "sqlite-normal":
    spooler = Spooler(f"sqlite:///{os.environ['BENCH_DB']}?synchronous=NORMAL")
else:
    spooler = Spooler(f"sqlite:///{os.environ['BENCH_DB']}")


@spooler.task(name="noop")
def noop(i: int) -> None:
    probe.hit(i)


def enqueue(i: int) -> None:
    noop.spool(i)


def fill(n: int) -> None:
    for start in range(0, n, 1000):
        noop.spool_many([(i,) for i in range(start, min(n, start + 1000))])


def close() -> None:
    spooler.close()
