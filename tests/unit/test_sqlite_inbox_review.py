"""Regression tests from a review of the SQLite inbox (migration 7).

A full disk must not stop claims or aborts (the move into jobs is undone and
skipped), the all_jobs view must survive a column added to jobs, a move takes
a bounded chunk of the oldest rows, and an id held by the inbox is never
stored a second time through another path.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_sqlite_backend import NOW, make_job

from spoolhouse.backends.base import CancelResult
from spoolhouse.backends.sqlite import SQLiteBackend
from spoolhouse.backends.sqlite import backend as sqlite_module
from spoolhouse.errors import StorageFull


def _rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _full_store(db_path: Path) -> tuple[SQLiteBackend, str, str]:
    """A store filled by single enqueues until the disk (max_page_count) is full,
    holding one running job (returned with its lease) and pending jobs in both
    jobs and inbox."""
    first = SQLiteBackend(f"sqlite:///{db_path}?synchronous=NORMAL")
    first.enqueue(make_job(), now=NOW)
    [running] = first.claim(["default"], worker_id="w", now=NOW, lease=30)
    pages = int(first._connection().execute("PRAGMA page_count").fetchone()[0])
    first.close()
    b = SQLiteBackend(
        f"sqlite:///{db_path}?synchronous=NORMAL", pragmas={"max_page_count": pages + 60}
    )
    for _ in range(100_000):
        try:
            b.enqueue(make_job(payload=b"x" * 100), now=NOW)
        except StorageFull:
            break
    else:
        raise AssertionError("the database never filled up")
    assert running.lease is not None
    return b, running.id, running.lease


def test_a_full_store_still_lets_workers_claim_pending_jobs(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b, _, _ = _full_store(db_path)
    try:
        assert _rows(db_path, "inbox") > 0 and _rows(db_path, "jobs") > 1
        for _ in range(2):
            claimed = b.claim(["default"], worker_id="w2", now=NOW + 1, lease=30, limit=1)
            assert len(claimed) == 1
        # said once (by the filling producer's move or the first claim), not at every claim
        assert len([r for r in caplog.records if "is full" in r.getMessage()]) == 1
    finally:
        b.close()


def test_a_full_store_still_lets_an_operator_abort_a_running_job(db_path: Path) -> None:
    b, running_id, _ = _full_store(db_path)
    try:
        assert _rows(db_path, "inbox") > 0
        assert b.cancel(running_id, now=NOW + 1) is CancelResult.ABORTING
    finally:
        b.close()


def test_all_jobs_survives_a_column_added_to_jobs(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}?synchronous=NORMAL")
    try:
        b.enqueue(make_job(), now=NOW)
    finally:
        b.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("ALTER TABLE jobs ADD COLUMN future TEXT")
        assert conn.execute("SELECT count(*) FROM all_jobs").fetchone()[0] == 1
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


def test_a_move_takes_a_bounded_chunk_of_the_oldest_rows(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_INBOX_MOVE_LIMIT", 3)
    b = SQLiteBackend(f"sqlite:///{db_path}?synchronous=NORMAL")
    try:
        jobs = [b.enqueue(make_job(), now=NOW) for _ in range(7)]
        claimed = b.claim(["default"], worker_id="w", now=NOW, lease=30, limit=10)
        # one claim moved the 3 oldest and claimed them; the rest wait in the inbox
        assert [j.id for j in claimed] == [j.id for j in jobs[:3]]
        assert (_rows(db_path, "inbox"), _rows(db_path, "jobs")) == (4, 3)
        assert b.counts() == {"default": {"running": 3, "pending": 4}}
        claimed = b.claim(["default"], worker_id="w", now=NOW, lease=30, limit=10)
        assert [j.id for j in claimed] == [j.id for j in jobs[3:6]]
        # a bulk write moves all of it, chunk after chunk
        b.enqueue_many([make_job()], now=NOW)
        assert _rows(db_path, "inbox") == 0
    finally:
        b.close()


def test_an_id_in_the_inbox_is_not_stored_again_by_a_keyed_enqueue(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}?synchronous=NORMAL")
    try:
        job = make_job()
        first = b.enqueue(job, now=NOW)
        assert b.enqueue(job.replace(key="k"), now=NOW) == first
        assert (_rows(db_path, "inbox"), _rows(db_path, "jobs")) == (1, 0)
    finally:
        b.close()
