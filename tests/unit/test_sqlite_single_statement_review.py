"""Regression tests from a review of the one-statement single enqueue (session 6).

Between a producer's moves of the inbox, a keyless enqueue is one INSERT run as
its own transaction (``_write_one``). Its waits for this process's writer lock
and for SQLite's write lock share one ``busy_timeout``, as ``_write``'s do, and
a retry of an enqueue that landed reads the stored record in the same
transaction as its insert, so another process pruning the job in between
cannot leave it nothing to read.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_sqlite_backend import NOW, make_job

from spoolhouse.backends.sqlite import SQLiteBackend
from spoolhouse.errors import EnqueueTimeout


def test_a_single_enqueue_waits_at_most_busy_timeout_in_all(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    backend = SQLiteBackend(f"sqlite:///{path}", busy_timeout=1.0)
    backend.enqueue(make_job(), now=NOW)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held throughout
    writer = backend._writer(os.getpid())
    held = threading.Event()
    release = threading.Event()

    def hold_writer() -> None:  # another thread of this process, writing for 0.7 s
        with writer:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold_writer)
    holder.start()
    timer = threading.Timer(0.7, release.set)
    try:
        assert held.wait(5)
        timer.start()
        started = time.monotonic()
        with pytest.raises(EnqueueTimeout):
            backend.enqueue(make_job(), now=NOW)
        waited = time.monotonic() - started
    finally:
        release.set()
        timer.cancel()
        holder.join()
        other.execute("ROLLBACK")
        other.close()
        backend.close()
    # 0.7 s for the writer lock, then what is left of the 1.0 s for SQLite's
    assert 0.9 <= waited < 1.4, f"enqueue waited {waited:.2f} s with busy_timeout=1.0"


def test_a_retried_enqueue_reads_its_record_back_despite_a_prune_in_between(
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.db"
    backend = SQLiteBackend(f"sqlite:///{path}")
    other = SQLiteBackend(f"sqlite:///{path}")
    job = make_job()
    backend.enqueue(job, now=NOW)
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease is not None
    assert backend.complete(job.id, claimed.lease, now=NOW, result=None, expires_at=NOW + 1)
    real = backend._write_one
    pruned: list[int] = []

    def then_another_process_prunes(*args: Any, **kwargs: Any) -> int:
        rowcount = real(*args, **kwargs)
        if not pruned:
            pruned.append(other.prune(now=NOW + 2, limit=10))
        return rowcount

    backend._write_one = then_another_process_prunes  # type: ignore[method-assign]
    try:
        stored = backend.enqueue(job, now=NOW)  # a retry of an enqueue that landed
    finally:
        backend.close()
        other.close()
    assert pruned == [1]
    # the job was gone by then: the retry stores it again, as a retry did before
    assert stored.id == job.id and stored.state.value == "pending"
