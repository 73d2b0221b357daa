"""SQLite-specific behaviour: URL, pragmas, migrations, query plans, errors, fork safety.

The transitions themselves are checked by tests/contract against every backend.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spoolhouse.backends import open_backend
from spoolhouse.backends.base import TaskLimit
from spoolhouse.backends.sqlite import SQLiteBackend, queries
from spoolhouse.backends.sqlite import backend as sqlite_module
from spoolhouse.backends.sqlite.backend import parse_url
from spoolhouse.backends.sqlite.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    split_statements,
)
from spoolhouse.errors import BackendUnavailable, ConfigurationError, EnqueueTimeout, StorageFull
from spoolhouse.job import Job, JobBatch, JobState, new_job_id

NOW = 1_700_000_000.0


def make_job(**fields: Any) -> Job:
    fields.setdefault("queue", "default")
    fields.setdefault("payload", b"[[], {}]")
    fields.setdefault("run_at", NOW)
    fields.setdefault("task", "t")
    fields.setdefault("id", new_job_id(NOW))
    return Job(created_at=NOW, **fields)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def backend(db_path: Path) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(f"sqlite:///{db_path}")
    yield b
    b.close()


@contextlib.contextmanager
def vm_steps(conn: sqlite3.Connection) -> Iterator[list[int]]:
    """Count the SQLite VM instructions run on ``conn`` inside the block (in ``[0]``)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        yield steps
    finally:
        conn.set_progress_handler(None, 1)


def pragma(backend: SQLiteBackend, name: str) -> Any:
    return backend._connection().execute(f"PRAGMA {name}").fetchone()[0]


# -- URL -------------------------------------------------------------------------


def test_url_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = parse_url("sqlite:///instance/spool.db", synchronous="FULL", busy_timeout=5.0)
    assert relative.path == str(tmp_path / "instance" / "spool.db")
    absolute = parse_url("sqlite:////var/lib/spool.db", synchronous="FULL", busy_timeout=5.0)
    assert absolute.path == "/var/lib/spool.db"
    assert (absolute.synchronous, absolute.busy_timeout) == ("FULL", 5.0)


def test_url_query_parameters_override_keywords() -> None:
    opts = parse_url(
        "sqlite:////x/spool.db?synchronous=normal&busy_timeout=10",
        synchronous="FULL",
        busy_timeout=5.0,
    )
    assert (opts.synchronous, opts.busy_timeout) == ("NORMAL", 10.0)


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite://host/spool.db", "three slashes"),
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:////x.db?journal=off", "worker_synchronous= and busy_timeout="),
        ("sqlite:////x.db?worker_synchronous=lazy", "power cut"),
        ("sqlite:////x.db?synchronous=sometimes", "FULL"),
        ("sqlite:////x.db?busy_timeout=soon", "seconds"),
        ("sqlite:////x.db?busy_timeout=-1", "seconds"),
        ("redis://x", "sqlite:///"),
    ],
)
def test_url_errors_name_the_fix(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url(url, synchronous="FULL", busy_timeout=5.0)
    assert hint in str(info.value)


def test_open_backend_builds_sqlite(db_path: Path) -> None:
    b = open_backend(f"sqlite:///{db_path}?busy_timeout=2", synchronous="NORMAL")
    try:
        assert isinstance(b, SQLiteBackend)
        assert b.url == f"sqlite:///{db_path}?busy_timeout=2"
        assert b.options.busy_timeout == 2.0 and b.options.synchronous == "NORMAL"
    finally:
        b.close()


def test_creates_the_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "instance" / "deeper" / "spool.db"
    b = SQLiteBackend(f"sqlite:///{path}")
    try:
        b.enqueue(make_job(), now=NOW)
        assert path.exists()
    finally:
        b.close()


# -- pragmas and schema ------------------------------------------------------------


def test_pragmas_on_every_connection(backend: SQLiteBackend) -> None:
    def check() -> dict[str, Any]:
        return {
            name: pragma(backend, name)
            for name in ("journal_mode", "synchronous", "busy_timeout", "auto_vacuum")
        }

    # SQLite's own busy handler never sleeps: the backend retries BEGIN IMMEDIATE
    # itself, with sleeps of 50 us to 1 ms, for up to busy_timeout (5 s)
    expected = {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 0, "auto_vacuum": 2}
    assert check() == expected
    seen: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: seen.append(check()))
    thread.start()
    thread.join()
    assert seen == [expected]


def test_synchronous_normal_is_an_opt_out(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}?synchronous=NORMAL", busy_timeout=0.5)
    try:
        assert pragma(b, "synchronous") == 1
        assert pragma(b, "busy_timeout") == 0 and b.options.busy_timeout == 0.5
    finally:
        b.close()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ("FULL", "NORMAL")),
        ("?synchronous=EXTRA", ("EXTRA", "NORMAL")),
        ("?synchronous=OFF", ("OFF", "OFF")),  # never more durable than enqueues
        ("?worker_synchronous=full", ("FULL", "FULL")),
        ("?synchronous=NORMAL&worker_synchronous=OFF", ("NORMAL", "OFF")),
    ],
)
def test_worker_synchronous_defaults_to_normal_at_most(query: str, expected: tuple[str, str]) -> None:
    opts = parse_url(f"sqlite:////x/spool.db{query}", synchronous="FULL", busy_timeout=5.0)
    assert (opts.synchronous, opts.worker_synchronous) == expected


def test_durable_writes_sync_the_wal_after_the_wake_up_and_worker_writes_do_not(
    backend: SQLiteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At FULL, an enqueue commits at NORMAL, wakes the workers, then fdatasyncs the
    WAL (what COMMIT at FULL would do) before it returns; workers' writes never sync;
    other durable writes commit at FULL."""
    events: list[tuple[str, str]] = []
    real = sqlite_module._datasync

    def datasync(fd: int) -> None:
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(sqlite_module, "_datasync", datasync)
    monkeypatch.setattr(backend._wake, "notify", lambda queue: events.append(("wake", queue)))
    wal = f"{db_path}-wal"
    backend.enqueue(make_job(), now=NOW)
    assert events == [("wake", "default"), ("sync", wal)]
    assert pragma(backend, "synchronous") == 1  # the commit itself: the sync is ours
    events.clear()
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert backend.complete_many([(claimed.id, claimed.lease or "", None, None)], now=NOW) == [True]
    assert events == []  # NORMAL: a lost claim or ack only runs the job again
    backend.enqueue_many([make_job(queue="a"), make_job(queue="b")], now=NOW)
    assert events == [("wake", "a"), ("wake", "b"), ("sync", wal)]
    events.clear()
    other = backend.enqueue(make_job(id=new_job_id(NOW)), now=NOW)
    events.clear()
    assert backend.cancel(other.id, now=NOW) is not None
    # an operator's action: durable too, synced by COMMIT at FULL (no wake-up to send
    # first, so its commit is never visible before it is durable)
    assert events == [] and pragma(backend, "synchronous") == 2
    events.clear()
    # a write that fails syncs nothing; a sync that fails is an error the caller sees
    with pytest.raises(ValueError), backend._write("enqueue"):
        raise ValueError("rolled back")
    backend._sync_wal("enqueue")
    assert events == []

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_module, "_datasync", broken)
    job = make_job()
    with pytest.raises(BackendUnavailable, match="syncing the WAL to disk failed"):
        backend.enqueue(job, now=NOW)
    assert backend.get(job.id) is not None  # committed: the error says so
    assert backend._local.wal_fd == -1  # dropped after a failure: the next sync reopens it
    monkeypatch.setattr(sqlite_module, "_datasync", real)
    backend.enqueue(make_job(), now=NOW)
    fd = backend._local.wal_fd
    assert fd >= 0 and os.readlink(f"/proc/self/fd/{fd}") == wal
    backend.close()  # closes the thread's connection and its -wal descriptor with it
    assert backend._local.wal_fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


@pytest.mark.parametrize(("query", "level"), [("?synchronous=EXTRA", 3), ("?synchronous=NORMAL", 1)])
def test_other_sync_levels_leave_the_wal_to_sqlite(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, query: str, level: int
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(sqlite_module, "_datasync", synced.append)
    b = SQLiteBackend(f"sqlite:///{db_path}{query}")
    try:
        b.enqueue(make_job(), now=NOW)
        assert pragma(b, "synchronous") == level and synced == []
    finally:
        b.close()


def test_extra_pragmas(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}", pragmas={"cache_size": -4000})
    try:
        assert pragma(b, "cache_size") == -4000
    finally:
        b.close()
    with pytest.raises(ConfigurationError):
        SQLiteBackend(f"sqlite:///{db_path}", pragmas={"cache_size; DROP TABLE jobs": 1})


def test_schema_version_and_migrations(backend: SQLiteBackend, db_path: Path) -> None:
    assert SCHEMA_VERSION == MIGRATIONS[-1].version == len(MIGRATIONS)
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert backend.schema_version() == SCHEMA_VERSION
    names = {
        r[0]
        for r in backend._connection().execute("SELECT name FROM sqlite_schema WHERE type='index'")
    }
    assert {
        "jobs_claim",
        "jobs_key",
        "jobs_task_started",
        "jobs_lease",
        "jobs_live_key",
        "jobs_expires",
        "jobs_failed",
        "jobs_queue",
        "jobs_task",
    } <= names
    assert "jobs_due" not in names  # dropped by migration 4: jobs_claim serves next_due
    assert "jobs_state" not in names  # dropped by migration 6: claims and acks moved it
    # opening again applies nothing and keeps the data
    job = backend.enqueue(make_job(), now=NOW)
    again = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        assert again.get(job.id) == job
        assert again.schema_version() == SCHEMA_VERSION
    finally:
        again.close()


def test_an_older_schema_is_migrated_on_open(db_path: Path) -> None:
    # a file as version 1 left it, with a job in it
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in split_statements(MIGRATIONS[0].sql):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    job = make_job(key="kept")
    v1 = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    values = dict(zip(queries.COLUMNS, queries._to_row(job), strict=True))
    marks = ", ".join("?" * len(v1))
    conn.execute(f"INSERT INTO jobs ({', '.join(v1)}) VALUES ({marks})", [values[c] for c in v1])
    conn.close()

    b = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        assert b.schema_version() == SCHEMA_VERSION >= 2
        assert b.get(job.id) == job
        assert b.enqueue(make_job(key="kept"), now=NOW).id == job.id
        assert b.schedule_tick("s", NOW, make_job(), now=NOW) is not None
        assert b.schedule_ticks() == {"s": NOW}
        b.check_integrity(full=True)
    finally:
        b.close()


def _v3_jobs() -> list[Job]:
    """Jobs in every state, with every optional field used somewhere."""
    ids = iter(sorted(new_job_id(NOW) for _ in range(9)))
    return [
        make_job(id=next(ids), queue="mail", priority=5, key="k-pending", headers='{"t": "1"}'),
        make_job(id=next(ids), queue="mail", run_at=NOW + 3600, max_attempts=3, timeout=30.0),
        make_job(id=next(ids), queue="reports", task="report", run_at=NOW - 60, result_ttl=60.0),
        make_job(
            id=next(ids), state=JobState.RUNNING, attempt=1, started_at=NOW, worker_id="w1",
            lease="0123456789abcdef", lease_expires_at=NOW + 30, key="k-running",
            progress='{"current": 1}', abort_requested=True,
        ),
        make_job(
            id=next(ids), state=JobState.SUCCEEDED, attempt=1, started_at=NOW, finished_at=NOW + 1,
            worker_id="w1", result=b"\x00result", result_ttl=60.0, expires_at=NOW + 61,
            key="k-done",
        ),
        make_job(
            id=next(ids), queue="reports", task="report", state=JobState.FAILED, attempt=2,
            max_attempts=2, lost=1, started_at=NOW, finished_at=NOW + 2, worker_id="w2",
            error='{"type": "ValueError"}', key="k-failed",
        ),
        make_job(id=next(ids), state=JobState.CANCELLED, finished_at=NOW, error='{"c": 1}'),
        make_job(id=next(ids), queue="mail", priority=-1, run_at=NOW - 1),
    ]


def test_a_version_3_file_opens_with_every_job_intact(db_path: Path) -> None:
    # a file as migrations 1-3 left it, written with plain SQL (not this code's writes)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    for migration in MIGRATIONS[:3]:
        for statement in split_statements(migration.sql):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("COMMIT")
    v3 = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    assert set(v3) == set(queries.COLUMNS)
    jobs = _v3_jobs()
    for job in jobs:
        values = {
            **dict(zip(queries.COLUMNS, queries._to_row(job), strict=True)),
            "state": job.state.value,
            "abort_requested": int(job.abort_requested),
        }
        marks = ", ".join("?" * len(v3))
        conn.execute(f"INSERT INTO jobs ({', '.join(v3)}) VALUES ({marks})", [values[c] for c in v3])
    conn.execute("INSERT INTO schedules (name, tick) VALUES ('nightly', ?)", (NOW,))
    conn.execute("INSERT INTO stats (minute, succeeded) VALUES (?, 3)", (int(NOW // 60),))
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert "jobs_due" in indexes
    conn.close()

    b = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        assert b.schema_version() == SCHEMA_VERSION >= 4
        b.check_integrity(full=True)
        for job in jobs:
            assert b.get(job.id) == job
        newest_first = sorted(jobs, key=lambda j: j.id, reverse=True)
        assert b.list_jobs(limit=100) == newest_first
        for field in ("state", "queue", "task", "key"):
            for value in {getattr(j, field) for j in jobs} - {None}:
                expected = [j for j in newest_first if getattr(j, field) == value]
                assert b.list_jobs(**{field: str(value)}, limit=100) == expected, (field, value)
        assert b.list_jobs(state="pending", queue="mail", limit=100) == [
            j for j in newest_first if j.state is JobState.PENDING and j.queue == "mail"
        ]
        assert b.schedule_ticks() == {"nightly": NOW}
        assert b.stats(since=NOW - 60)[0][1] == 3
        assert b.next_due(["mail"], now=NOW) == NOW - 1
        assert b.next_due(["mail", "reports"], now=NOW) == NOW - 60
        # keys held in v3 still hold; the running job keeps its lease
        assert b.enqueue(make_job(key="k-done"), now=NOW).id == jobs[4].id
        assert b.enqueue(make_job(key="k-running"), now=NOW).id == jobs[3].id
        assert b.complete(jobs[3].id, "0123456789abcdef", now=NOW, result=None, expires_at=None)
        claimed = b.claim(["mail"], worker_id="w", now=NOW, lease=30, limit=5)
        assert [j.id for j in claimed] == [jobs[0].id, jobs[7].id]  # priority 5, then -1
    finally:
        b.close()


def test_schema_sql_starts_with_a_header_and_splits_into_statements() -> None:
    sql = MIGRATIONS[0].sql
    assert sql.startswith("-- ")
    statements = split_statements(sql)
    assert statements[0].rstrip().endswith(";")
    assert sum("CREATE TABLE" in s for s in statements) == 1
    assert sum("CREATE INDEX" in s or "CREATE UNIQUE INDEX" in s for s in statements) == 8
    assert split_statements("-- only; a comment\n") == []


def test_a_newer_schema_is_refused(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    b = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        with pytest.raises(BackendUnavailable, match="upgrade spoolhouse"):
            b.get("x")
    finally:
        b.close()


def _open_and_enqueue(path: str, n: int) -> None:
    b = SQLiteBackend(f"sqlite:///{path}")
    for _ in range(n):
        b.enqueue(make_job(), now=NOW)
    b.close()


def test_concurrent_first_open_from_processes(db_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_and_enqueue, args=(str(db_path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    b = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        assert b.counts() == {"default": {"pending": 100}}
        assert b.schema_version() == SCHEMA_VERSION
        assert pragma(b, "auto_vacuum") == 2
        b.check_integrity(full=True)
    finally:
        b.close()


# -- query plans -----------------------------------------------------------------


def _plans(backend: SQLiteBackend, action: Callable[[], object]) -> list[tuple[str, list[str]]]:
    """Run ``action`` and return the query plan of every statement it executed."""
    conn = backend._connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        action()
    finally:
        conn.set_trace_callback(None)
    out: list[tuple[str, list[str]]] = []
    for sql in statements:
        head = sql.lstrip().split(None, 1)[0].upper()
        if head in ("SELECT", "UPDATE", "DELETE", "INSERT"):
            plan = [str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            out.append((sql, plan))
    return out


def _fill(backend: SQLiteBackend) -> None:
    jobs = [
        make_job(queue=f"q{i % 3}", priority=i % 5, run_at=NOW + (i % 7) - 3, key=f"k{i}")
        for i in range(300)
    ]
    backend.enqueue_many(jobs, now=NOW)
    claimed = backend.claim(["q0", "q1"], worker_id="w", now=NOW, lease=30, limit=40)
    for job in claimed[:20]:
        assert job.lease is not None
        backend.complete(job.id, job.lease, now=NOW, result=None, expires_at=NOW + 5)


def test_counts_from_the_indexes_match_a_count_of_every_row(
    backend: SQLiteBackend, db_path: Path
) -> None:
    """counts() subtracts the indexed states from each queue's total: it must
    give what a GROUP BY over every stored row gives, whatever the mix."""
    _fill(backend)  # q0-q2: pending (due and future), running, succeeded
    running = backend.claim(["q2"], worker_id="w", now=NOW, lease=30, limit=30)
    for job in running[:7]:
        assert job.lease is not None
        assert backend.fail(job.id, job.lease, now=NOW, error="{}", expires_at=None)
    for job in backend.list_jobs(state="pending", queue="q1", limit=5):
        assert backend.cancel(job.id, now=NOW) is not None
    for i in range(4):  # single enqueues wait in the inbox, one in a queue of its own
        backend.enqueue(make_job(queue="q0" if i else "solo"), now=NOW)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT queue, state, count(*) FROM all_jobs GROUP BY queue, state"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 4
    expected: dict[str, dict[str, int]] = {}
    for queue, state, n in rows:
        expected.setdefault(queue, {})[state] = n
    assert {s for by in expected.values() for s in by} == {
        "pending", "running", "succeeded", "failed", "cancelled"
    }
    assert backend.counts() == expected
    assert list(backend.counts()) == sorted(expected)  # queues in name order


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("claim", "jobs_claim"),
        ("next_due", "jobs_claim"),
        ("claim_nothing_due", "jobs_claim"),
        ("rescue_expired", "jobs_lease"),
        ("prune", "jobs_expires"),
        ("enqueue_with_key", "jobs_live_key"),
        ("enqueue_with_free_key", "jobs_key"),
        ("claim_with_limits", "jobs_task_started"),
        ("schedule_tick", "sqlite_autoindex_schedules_1"),
        ("list_failed", "jobs_failed"),
        ("list_cancelled", "jobs_failed"),
        ("list_running", "jobs_lease"),
        ("list_by_queue", "jobs_queue"),
        ("list_by_task", "jobs_task"),
        ("list_by_key", "jobs_key"),
        ("stats", "stats"),
    ],
)
def test_query_plans_use_their_index_and_never_scan(
    backend: SQLiteBackend, name: str, index: str
) -> None:
    _fill(backend)
    actions: dict[str, Callable[[], object]] = {
        "claim": lambda: backend.claim(["q0", "q2"], worker_id="w", now=NOW, lease=30, limit=5),
        "next_due": lambda: backend.next_due(["q0", "q1", "q2"], now=NOW),
        # only future jobs: the look-before-lock walks every level and takes no lock
        "claim_nothing_due": lambda: backend.claim(
            ["q0", "q1", "q2"], worker_id="w", now=NOW - 10, lease=30, limit=5
        ),
        "rescue_expired": lambda: backend.rescue_expired(now=NOW + 1, max_lost=3, error="{}"),
        "prune": lambda: backend.prune(now=NOW + 10, limit=10),
        "enqueue_with_key": lambda: backend.enqueue(make_job(key="k7"), now=NOW),
        "enqueue_with_free_key": lambda: backend.enqueue(make_job(key="k-new"), now=NOW),
        "claim_with_limits": lambda: backend.claim(
            ["q0", "q2"],
            worker_id="w",
            now=NOW,
            lease=30,
            limit=5,
            limits={"t": TaskLimit(concurrency=50, rate=100, per=60.0)},
        ),
        "schedule_tick": lambda: backend.schedule_tick("s", NOW, make_job(), now=NOW),
        "list_failed": lambda: backend.list_jobs(state="failed", cursor="z", limit=10),
        "list_cancelled": lambda: backend.list_jobs(state="cancelled", limit=10),
        "list_running": lambda: backend.list_jobs(state="running", limit=10),
        "list_by_queue": lambda: backend.list_jobs(queue="q1", limit=10),
        "list_by_task": lambda: backend.list_jobs(task="t", limit=10),
        "list_by_key": lambda: backend.list_jobs(key="k3", limit=10),
        "stats": lambda: backend.stats(since=NOW - 3600),
    }
    # Passes over jobs_lease read every running job: a set bounded by the
    # workers' threads and prefetch, not by the backlog, so they may be read
    # whole (counting a task's running jobs) and sorted (listing them).
    # The inbox holds single enqueues not yet moved into jobs: a few hundred rows
    # at most (every claim moves it, a producer every 250 jobs), read whole; a
    # statement that reads only the inbox may scan and sort it.
    bounded = {"SCAN jobs USING INDEX jobs_lease", "SCAN inbox"}
    if name == "list_running":
        bounded.add("USE TEMP B-TREE FOR ORDER BY")
    plans = _plans(backend, actions[name])
    assert plans, "the action ran no query"
    details = [line for _, plan in plans for line in plan]
    assert any(index in line for line in details), details
    for sql, plan in plans:
        if " inbox" in sql and " jobs" not in sql:
            continue
        for line in plan:
            if line in bounded:
                continue
            assert "TEMP B-TREE" not in line, (sql, plan)
            # a SCAN is a full pass over the table or an index
            assert not line.startswith("SCAN"), (sql, plan)


def test_hot_writes_build_no_temporary_btree_per_row(backend: SQLiteBackend) -> None:
    """A CHECK or partial-index condition written as "x IN (a, b, c)" makes SQLite
    build a temporary B-tree of the list for every row written; migration 5
    rewrote the state CHECK as a chain of "=" (a bulk insert got ~30% cheaper)."""
    conn = backend._connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        backend.enqueue(make_job(), now=NOW)
        backend.enqueue(make_job(key="k", timeout=3.0), now=NOW)
        backend.enqueue_many([make_job() for _ in range(3)], now=NOW)
        for job in backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=3):
            assert job.lease is not None
            if job.key is None:
                backend.complete(job.id, job.lease, now=NOW, result=b"r", expires_at=None)
            else:
                backend.retry(job.id, job.lease, now=NOW, run_at=NOW, error="{}")
    finally:
        conn.set_trace_callback(None)
    writes = [s for s in statements if s.split(None, 1)[0].upper() in ("INSERT", "UPDATE")]
    assert any(s.startswith("INSERT INTO jobs") for s in writes)
    assert any("'succeeded'" in s for s in writes) and any("'pending'" in s for s in writes)
    for sql in writes:
        if " IN (SELECT" in sql:
            continue  # claim's subquery: one temporary list per claim, not per row
        opcodes = [str(r[1]) for r in conn.execute(f"EXPLAIN {sql}")]
        # RETURNING buffers its output in one, once per statement
        assert opcodes.count("OpenEphemeral") == ("RETURNING" in sql), sql


# -- types -------------------------------------------------------------------------


def test_whole_float_values_come_back_as_floats(backend: SQLiteBackend) -> None:
    job = make_job(timeout=30.0, result_ttl=60.0, max_attempts=3)
    stored = backend.enqueue(job, now=NOW)
    [claimed] = backend.claim(["default"], worker_id="w", now=NOW, lease=30.0)
    assert claimed.lease is not None
    rescued = backend.rescue(claimed.id, claimed.lease, now=NOW, max_lost=5, error="{}")
    assert rescued is not None
    listed = backend.list_jobs()[0]
    for record in (stored, claimed, rescued, listed, backend.get(job.id)):
        assert record is not None
        for name in ("run_at", "timeout", "created_at", "result_ttl"):
            assert type(getattr(record, name)) is float, (name, record)
        assert type(record.abort_requested) is bool
        assert type(record.state) is JobState
    assert type(claimed.started_at) is float and type(claimed.lease_expires_at) is float


def test_enqueue_returns_what_a_read_returns(backend: SQLiteBackend) -> None:
    """enqueue does not read the row back; its record must still be the stored one."""
    plain = make_job(timeout=30.0)
    assert backend.enqueue(plain, now=NOW) == backend.get(plain.id)
    # ints given for REAL columns are stored as REAL and come back as floats
    odd = make_job(run_at=int(NOW), timeout=30, result_ttl=5)
    for record in (backend.enqueue(odd, now=NOW), *backend.enqueue_many([odd], now=NOW)):
        assert record == backend.get(odd.id)
        assert type(record.run_at) is float and type(record.timeout) is float
    row = backend._connection().execute(
        "SELECT typeof(state), typeof(abort_requested), typeof(run_at) FROM jobs WHERE id = ?",
        (odd.id,),
    ).fetchone()
    assert row == ("text", "integer", "real")


def test_enqueue_many_mixes_stored_ids_duplicates_and_keys(backend: SQLiteBackend) -> None:
    """The one-statement bulk path keeps the per-job answers of enqueue, in order."""
    landed = backend.enqueue_many([make_job(), make_job(key="held")], now=NOW)
    # fresh[1] has other NULL columns than its neighbours: a run of its own
    fresh = [make_job(), make_job(timeout=5.0, headers='{"a": "b"}'), make_job()]
    holder_of_key = make_job(key="held")  # its key is held: the stored holder is returned
    new_key = make_job(key="new")
    again = landed[0].replace(payload=b"changed")  # a retry with the id of a stored job
    batch = [fresh[0], again, holder_of_key, fresh[1], fresh[1], new_key, make_job(key="new"),
             fresh[2]]
    records = backend.enqueue_many(batch, now=NOW)
    assert [r.id for r in records] == [
        fresh[0].id, landed[0].id, landed[1].id, fresh[1].id, fresh[1].id, new_key.id,
        new_key.id, fresh[2].id,
    ]
    assert records[1].payload == landed[0].payload  # the stored job, unchanged
    for record in records:
        assert record == backend.get(record.id)
    assert backend.counts() == {"default": {"pending": 6}}
    # a batch of stored ids alone stores nothing and returns the stored jobs
    assert backend.enqueue_many(fresh, now=NOW) == [backend.get(j.id) for j in fresh]
    assert backend.counts() == {"default": {"pending": 6}}


@pytest.mark.parametrize("headers", ["none", "all", "some"])
def test_enqueue_batch_stores_what_enqueue_many_stores(
    backend: SQLiteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch, headers: str
) -> None:
    """spool_many's path: rows made from the template, the same rows as enqueue_many's."""
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(sqlite_module, "_datasync", lambda fd: events.append(("sync", "")))
    monkeypatch.setattr(backend._wake, "notify", lambda queue: events.append(("wake", queue)))
    # ints given for REAL columns, as a task's config may hold them
    template = Job(id="", task="t", queue="mail", payload=b"", priority=3, run_at=int(NOW),
                   max_attempts=4, timeout=30, created_at=NOW, result_ttl=60)
    ids = [new_job_id(NOW) for _ in range(5)]
    payloads = [f"[{i}]".encode() for i in range(5)]
    heads = {"none": [None] * 5, "all": [f'{{"t":"{i}"}}' for i in range(5)],
             "some": [None, '{"t":"1"}', None, None, '{"t":"2"}']}[headers]
    batch = JobBatch(template, ids, payloads, heads)
    backend.enqueue_batch(batch, now=NOW)
    assert events == [("wake", "mail"), ("sync", "")]
    twin = SQLiteBackend(f"sqlite:///{db_path.with_name('twin.db')}")
    try:
        expected = twin.enqueue_many(batch.jobs(), now=NOW)
        stored = [backend.get(job_id) for job_id in ids]
        assert stored == expected == [twin.get(job_id) for job_id in ids]
    finally:
        twin.close()
    # a retried batch stores nothing new and changes nothing
    again = JobBatch(template, ids, [b"[9]"] * 5, heads)
    backend.enqueue_batch(again, now=NOW)
    assert [backend.get(job_id) for job_id in ids] == stored
    assert backend.counts() == {"mail": {"pending": 5}}
    with pytest.raises(ValueError, match="unique key"):
        backend.enqueue_batch(JobBatch(template.replace(key="k"), ids, payloads, heads), now=NOW)
    backend.enqueue_batch(JobBatch(template, [], [], []), now=NOW)  # nothing to store


def test_a_full_claim_reads_no_further_level_or_queue(backend: SQLiteBackend) -> None:
    """Once ``limit`` jobs are claimed, the next priority level and the next queue are
    not looked up (a statement less on every claim, which an idle worker's wake-up waits on)."""
    for queue, priority in (("a", 5), ("a", 1), ("b", 0)):
        backend.enqueue(make_job(queue=queue, priority=priority), now=NOW)
    statements: list[str] = []
    conn = backend._connection()
    conn.set_trace_callback(statements.append)
    try:
        (job,) = backend.claim(["a", "b"], worker_id="w", now=NOW, lease=30, limit=1)
    finally:
        conn.set_trace_callback(None)
    assert job.queue == "a" and job.priority == 5
    assert not [s for s in statements if "priority < " in s]  # _NEXT_PRIORITY
    # the look before the write lock reads each queue's head; the claim itself skips b
    assert not [s for s in statements if "queue = 'b'" in s and "SELECT priority FROM" in s]
    assert [s for s in statements if "queue = 'a'" in s and "SELECT priority FROM" in s]
    # asked for more, it goes on to the next level and the next queue
    claimed = backend.claim(["a", "b"], worker_id="w", now=NOW, lease=30, limit=5)
    assert [(j.queue, j.priority) for j in claimed] == [("a", 1), ("b", 0)]


def test_bad_rows_are_refused_by_the_table(backend: SQLiteBackend) -> None:
    """STRICT columns and CHECKs keep malformed rows out (R18 writes behind our back)."""
    conn = backend._connection()
    backend.enqueue_many([make_job()], now=NOW)  # into jobs
    backend.enqueue(make_job(), now=NOW)  # into inbox
    assert conn.execute("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM inbox)").fetchone() == (1, 1)
    for table in ("jobs", "inbox"):
        for column, value in (("run_at", "garbage"), ("state", "odd"), ("task", None)):
            with pytest.raises(sqlite3.IntegrityError):
                conn.execute(f"UPDATE {table} SET {column} = ?", (value,))
    # inbox holds only what a single enqueue of a keyless pending job stores
    for column, value in (("state", "running"), ("key", "k")):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"UPDATE inbox SET {column} = ?", (value,))


# -- errors ----------------------------------------------------------------------


def test_locked_database_raises_enqueue_timeout(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}", busy_timeout=0.2)
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        waiting = b.enqueue(make_job(), now=NOW)
        holder.execute("BEGIN EXCLUSIVE")
        refused = make_job()
        started = time.monotonic()
        with pytest.raises(EnqueueTimeout, match="busy_timeout") as info:
            b.enqueue(refused, now=NOW)
        assert time.monotonic() - started < 2.0
        assert "BEGIN EXCLUSIVE" in str(info.value)
        with pytest.raises(EnqueueTimeout):
            b.enqueue_many([make_job(), make_job()], now=NOW)
        # elsewhere the same condition is BackendUnavailable, not an enqueue timeout
        with pytest.raises(BackendUnavailable) as claim_info:
            b.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert not isinstance(claim_info.value, EnqueueTimeout)
        # WAL readers are not blocked by a writer
        assert b.get(waiting.id) == waiting
        holder.execute("ROLLBACK")
        assert b.get(refused.id) is None
        assert b.counts() == {"default": {"pending": 1}}
        started = time.monotonic()
        b.enqueue(make_job(), now=NOW)  # recovers at once
        assert time.monotonic() - started < 1.0
        assert b.counts() == {"default": {"pending": 2}}
    finally:
        holder.close()
        b.close()


def test_a_writer_waits_past_sqlites_own_slice_until_the_lock_is_free(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}", busy_timeout=5.0)
    b.enqueue(make_job(), now=NOW)
    holder = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        started = time.monotonic()
        b.enqueue(make_job(), now=NOW)  # held 0.3 s: well past one 20 ms slice
        waited = time.monotonic() - started
        assert 0.2 <= waited < 2.0
        assert b.counts() == {"default": {"pending": 2}}
    finally:
        release.join()
        holder.close()
        b.close()


def test_locked_before_anyone_opened_the_file(db_path: Path) -> None:
    """An exclusive lock taken while no connection is open blocks readers too."""
    setup = SQLiteBackend(f"sqlite:///{db_path}")
    setup.enqueue(make_job(), now=NOW)
    setup.close()  # the last connection removes -wal and -shm
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    b = SQLiteBackend(f"sqlite:///{db_path}", busy_timeout=0.2)
    try:
        refused = make_job()
        started = time.monotonic()
        with pytest.raises(EnqueueTimeout):
            b.enqueue(refused, now=NOW)
        assert time.monotonic() - started < 2.0
        with pytest.raises(BackendUnavailable, match="busy_timeout"):
            b.counts()
        holder.execute("ROLLBACK")
        assert b.get(refused.id) is None
        b.enqueue(make_job(), now=NOW)
        assert b.counts() == {"default": {"pending": 2}}
    finally:
        holder.close()
        b.close()


def test_a_thread_holding_the_write_turn_bounds_the_others_wait(db_path: Path) -> None:
    """Threads of one process queue on the backend's writer lock, within busy_timeout."""
    b = SQLiteBackend(f"sqlite:///{db_path}", busy_timeout=0.2)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with b._write("claim"):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        refused = make_job()
        started = time.monotonic()
        with pytest.raises(EnqueueTimeout, match="busy_timeout"):
            b.enqueue(refused, now=NOW)
        assert 0.15 <= time.monotonic() - started < 2.0
        release.set()
        holder.join(10)
        assert b.get(refused.id) is None
        b.enqueue(make_job(), now=NOW)  # the turn is free again
        assert b.counts() == {"default": {"pending": 1}}
    finally:
        release.set()
        holder.join(10)
        b.close()


def _fill_until_full(b: SQLiteBackend, payload_size: int) -> list[Job]:
    stored: list[Job] = []
    for _ in range(500):
        job = make_job(payload=os.urandom(payload_size))
        try:
            stored.append(b.enqueue(job, now=NOW))
        except StorageFull:
            assert b.get(job.id) is None
            return stored
    raise AssertionError("the database never filled up")


def test_disk_full_raises_storage_full_and_stores_nothing(db_path: Path) -> None:
    first = SQLiteBackend(f"sqlite:///{db_path}")
    running = first.enqueue(make_job(max_attempts=3), now=NOW)
    [claimed] = first.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease is not None
    pages = pragma(first, "page_count")
    first.close()

    b = SQLiteBackend(f"sqlite:///{db_path}", pragmas={"max_page_count": pages + 40})
    try:
        stored = _fill_until_full(b, 16 * 1024)
        assert stored, "no job fitted before the cap"
        with pytest.raises(StorageFull, match="nothing was stored"):
            b.enqueue(make_job(payload=os.urandom(64 * 1024)), now=NOW)
        batch = [make_job(payload=os.urandom(16 * 1024)) for _ in range(8)]
        with pytest.raises(StorageFull):
            b.enqueue_many(batch, now=NOW)
        assert all(b.get(j.id) is None for j in batch)
        # an ack that does not fit leaves the job running under its lease
        with pytest.raises(StorageFull):
            b.complete(
                running.id, claimed.lease, now=NOW, result=os.urandom(256 * 1024), expires_at=None
            )
        still = b.get(running.id)
        assert still is not None
        assert still.state is JobState.RUNNING and still.lease == claimed.lease
        assert b.counts() == {"default": {"pending": len(stored), "running": 1}}
        b.check_integrity(full=True)
        # after space is freed, the same ack succeeds
        b._connection().execute("PRAGMA max_page_count = 1000000")
        assert b.complete(
            running.id, claimed.lease, now=NOW, result=os.urandom(256 * 1024), expires_at=None
        )
        b.enqueue(make_job(payload=os.urandom(64 * 1024)), now=NOW)
    finally:
        b.close()


def _try_enqueue(path: str, out: Any) -> None:
    """In a forked child: give up root if we have it, then try one enqueue."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # nobody: root would ignore the directory's permissions
    b = SQLiteBackend(f"sqlite:///{path}")
    started = time.monotonic()
    try:
        b.enqueue(make_job(), now=NOW)
        report: dict[str, Any] = {"error": None}
    except Exception as exc:
        report = {
            "error": type(exc).__name__,
            "message": str(exc),
            "unavailable": isinstance(exc, BackendUnavailable),
        }
    report["elapsed"] = time.monotonic() - started
    out.send(report)


def _enqueue_unprivileged(path: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_try_enqueue, args=(str(path), sender))
    proc.start()
    assert receiver.poll(30), "the child did not report"
    report: dict[str, Any] = receiver.recv()
    proc.join(timeout=30)
    assert proc.exitcode == 0
    return report


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


@pytest.fixture
def readonly_dir() -> Iterator[Path]:
    # not under tmp_path: an unprivileged child must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="spoolhouse-ro-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        root.chmod(0o755)
        for child in sorted(root.rglob("*"), reverse=True):
            if child.is_dir():
                child.chmod(0o755)
                child.rmdir()
            else:
                child.unlink()
        root.rmdir()


@needs_fork
def test_read_only_directory_new_database(readonly_dir: Path) -> None:
    locked = readonly_dir / "ro"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    out = _enqueue_unprivileged(locked / "spool.db")
    assert out["error"] is not None and out["unavailable"], out
    assert "writable" in out["message"], out
    assert out["elapsed"] < 2.5
    assert not (locked / "spool.db").exists()


@needs_fork
def test_read_only_directory_existing_database(readonly_dir: Path) -> None:
    locked = readonly_dir / "ro"
    locked.mkdir()
    path = locked / "spool.db"
    b = SQLiteBackend(f"sqlite:///{path}")
    b.enqueue(make_job(), now=NOW)
    b.close()  # the last connection checkpoints and removes -wal and -shm
    path.chmod(0o644)
    locked.chmod(0o555)
    out = _enqueue_unprivileged(path)
    assert out["error"] is not None and out["unavailable"], out
    assert "writable" in out["message"], out
    assert out["elapsed"] < 2.5
    locked.chmod(0o755)
    check = SQLiteBackend(f"sqlite:///{path}")
    try:
        assert check.counts() == {"default": {"pending": 1}}
    finally:
        check.close()


def test_cannot_open_names_the_directory(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    b = SQLiteBackend(f"sqlite:///{not_a_dir}/spool.db")
    with pytest.raises(BackendUnavailable, match=str(not_a_dir)):
        b.enqueue(make_job(), now=NOW)
    with pytest.raises(BackendUnavailable):
        b.get("x")


def test_not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a database file at all " * 200)
    b = SQLiteBackend(f"sqlite:///{db_path}")
    with pytest.raises(BackendUnavailable, match="not a SQLite database|damaged"):
        b.counts()
    with pytest.raises(BackendUnavailable):
        b.enqueue(make_job(), now=NOW)


def test_check_integrity_finds_a_damaged_page(db_path: Path) -> None:
    b = SQLiteBackend(f"sqlite:///{db_path}")
    b.enqueue_many([make_job(payload=os.urandom(300), key=f"k{i}") for i in range(400)], now=NOW)
    b.check_integrity()
    b.check_integrity(full=True)
    page_size = pragma(b, "page_size")
    pages = pragma(b, "page_count")
    b.close()
    assert pages > 10
    with open(db_path, "r+b") as f:  # overwrite a page in the middle of the file
        f.seek(page_size * (pages // 2))
        f.write(b"\xa5" * page_size)
    damaged = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        with pytest.raises(BackendUnavailable, match="restore it|salvage"):
            damaged.check_integrity(full=True)
    finally:
        damaged.close()


# -- connections -------------------------------------------------------------------


def test_one_connection_per_thread_and_close(backend: SQLiteBackend) -> None:
    mine = backend._connection()
    assert backend._connection() is mine
    theirs: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: theirs.append(backend._connection()))
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    backend.close()
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")  # closed
    reopened = backend._connection()
    assert reopened is not mine
    assert backend.counts() == {}


def _child_after_fork(backend: SQLiteBackend, inherited_id: int, out: Any) -> None:
    job = backend.enqueue(make_job(queue="child"), now=NOW)
    conn = backend._connection()
    out.send(
        {
            "job": job.id,
            "new_connection": id(conn) != inherited_id,
            "abandoned": any(id(c) == inherited_id for c in sqlite_module._ABANDONED),
        }
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_connections_are_not_carried_across_fork(backend: SQLiteBackend) -> None:
    parent_job = backend.enqueue(make_job(), now=NOW)
    inherited = backend._connection()
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_after_fork, args=(backend, id(inherited), sender))
    proc.start()
    assert receiver.poll(30), "the forked child did not report"
    report = receiver.recv()
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert report["new_connection"] and report["abandoned"]
    # the parent's connection is untouched and sees the child's write
    assert backend._connection() is inherited
    assert backend.get(report["job"]) is not None
    assert backend.get(parent_job.id) == parent_job
    backend.check_integrity(full=True)


# -- concurrency -------------------------------------------------------------------


def test_concurrent_writers_in_threads_never_see_locked(backend: SQLiteBackend) -> None:
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(100):
                backend.enqueue(make_job(), now=NOW)
        except BaseException as exc:
            errors.append(exc)

    def consume(got: list[str]) -> None:
        try:
            for _ in range(200):
                for job in backend.claim(["default"], worker_id="c", now=NOW, lease=30, limit=2):
                    assert job.lease is not None
                    assert backend.complete(
                        job.id, job.lease, now=NOW, result=None, expires_at=None
                    )
                    got.append(job.id)
        except BaseException as exc:
            errors.append(exc)

    done: list[str] = []
    threads = [threading.Thread(target=produce) for _ in range(4)]
    threads += [threading.Thread(target=consume, args=(done,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(done) == len(set(done))
    counts = backend.counts()["default"]
    assert counts.get("pending", 0) + counts.get("succeeded", 0) == 400
    assert counts.get("succeeded", 0) == len(done)


# -- space -------------------------------------------------------------------------


def test_prune_gives_space_back(backend: SQLiteBackend) -> None:
    jobs = backend.enqueue_many(
        [make_job(payload=os.urandom(8 * 1024)) for _ in range(300)], now=NOW
    )
    for job in backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=300):
        assert job.lease is not None
        backend.complete(job.id, job.lease, now=NOW, result=None, expires_at=NOW)
    full = pragma(backend, "page_count")
    assert backend.prune(now=NOW, limit=1000) == len(jobs)
    assert pragma(backend, "freelist_count") == 0
    assert pragma(backend, "page_count") < full // 4
    backend.enqueue_many([make_job(payload=os.urandom(8 * 1024)) for _ in range(50)], now=NOW)
    for job in backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=50):
        assert job.lease is not None
        backend.fail(job.id, job.lease, now=NOW, error="{}", expires_at=None)
    before = pragma(backend, "page_count")
    assert backend.purge(states=["failed"]) == 50
    assert pragma(backend, "freelist_count") == 0
    assert pragma(backend, "page_count") < before


def _claim_steps(tmp_path: Path, backlog: int) -> int:
    """SQLite VM instructions one claim executes with ``backlog`` jobs waiting."""
    b = SQLiteBackend(f"sqlite:///{tmp_path / f'steps-{backlog}.db'}")
    try:
        jobs = []
        for i in range(backlog):
            if i % 4 == 0:  # future jobs of a higher priority: a claim must not step over them
                jobs.append(make_job(priority=9, run_at=NOW + 3600 + i))
            else:
                jobs.append(make_job(priority=i % 3, run_at=NOW - i))
        b.enqueue_many(jobs, now=NOW)
        b.enqueue_many([make_job(queue="other") for _ in range(backlog)], now=NOW)
        with vm_steps(b._connection()) as steps:
            [job] = b.claim(["empty", "default"], worker_id="w", now=NOW, lease=30)
        assert job.priority == 2
        return steps[0]
    finally:
        b.close()


def test_claim_cost_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    small = _claim_steps(tmp_path, 40)
    large = _claim_steps(tmp_path, 4000)
    # a B-tree descent is a little deeper in a bigger file; a scan would be 100x
    assert large < small * 1.5, (small, large)


def _idle_steps(tmp_path: Path, backlog: int) -> tuple[int, float | None]:
    """VM instructions of a claim and a next_due with only future jobs (3 priority levels)."""
    b = SQLiteBackend(f"sqlite:///{tmp_path / f'idle-{backlog}.db'}")
    try:
        b.enqueue_many(
            [make_job(priority=i % 3, run_at=NOW + 60 + i) for i in range(backlog)], now=NOW
        )
        with vm_steps(b._connection()) as steps:
            assert b.claim(["default"], worker_id="w", now=NOW, lease=30) == []
            due = b.next_due(["default"], now=NOW)
        return steps[0], due
    finally:
        b.close()


def test_idle_claim_and_next_due_do_not_grow_with_scheduled_jobs(tmp_path: Path) -> None:
    small, due_small = _idle_steps(tmp_path, 40)
    large, due_large = _idle_steps(tmp_path, 4000)
    assert due_small == due_large == NOW + 60
    assert large < small * 1.5, (small, large)


def test_prune_keeps_a_week_of_stats(backend: SQLiteBackend) -> None:
    for finished in (NOW - 8 * 86400, NOW - 2 * 86400, NOW):
        job = backend.enqueue(make_job(), now=NOW)
        [claimed] = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert claimed.id == job.id and claimed.lease is not None
        assert backend.complete(job.id, claimed.lease, now=finished, result=None, expires_at=None)
    assert [row[1] for row in backend.stats(since=0)] == [1, 1, 1]
    backend.prune(now=NOW)
    kept = backend.stats(since=0)
    assert [row[0] for row in kept] == [(NOW - 2 * 86400) // 60 * 60, NOW // 60 * 60]


def test_producers_do_not_checkpoint_but_workers_do(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_PRODUCER_CHECKPOINT_EVERY", 10)
    checkpoints: list[int] = []
    real = SQLiteBackend._checkpoint

    def counting(self: SQLiteBackend, conn: sqlite3.Connection) -> None:
        checkpoints.append(1)
        real(self, conn)

    monkeypatch.setattr(SQLiteBackend, "_checkpoint", counting)
    for _ in range(9):
        backend.enqueue(make_job(), now=NOW)
    assert pragma(backend, "wal_autocheckpoint") == 0  # a web request never pays for one
    assert checkpoints == []
    backend.enqueue_many([make_job()], now=NOW)
    assert checkpoints == [1]  # but a producer-only period cannot grow the WAL forever
    backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert pragma(backend, "wal_autocheckpoint") == 1000  # workers checkpoint as usual
    backend.enqueue(make_job(), now=NOW)
    assert pragma(backend, "wal_autocheckpoint") == 0
    # the count is the process's: producer threads sharing the work checkpoint as one
    checkpoints.clear()

    def spool(n: int) -> None:
        for _ in range(n):
            backend.enqueue(make_job(id=new_job_id()), now=NOW)

    for n in (4, 5):  # 1 + 4 + 5 = 10 commits since the last checkpoint
        t = threading.Thread(target=spool, args=(n,))
        t.start()
        t.join()
    assert checkpoints == [1]


def test_row_mapping_covers_every_column_in_order() -> None:
    values: dict[str, Any] = {}
    for i, name in enumerate(queries.COLUMNS):
        values[name] = f"v{i}"  # a distinct value per field, to catch a swapped column
    values.update(state=JobState.RUNNING, abort_requested=True)
    job = Job(**values)
    row = queries._to_row(job)
    assert len(row) == len(queries.COLUMNS)
    expected = [values[name] for name in queries.COLUMNS]
    expected[queries.COLUMNS.index("state")] = "running"
    expected[queries.COLUMNS.index("abort_requested")] = 1
    assert list(row) == expected
    # bound as the exact types sqlite3 binds without an adapter lookup
    assert type(row[queries.COLUMNS.index("state")]) is str
    assert type(row[queries.COLUMNS.index("abort_requested")]) is int


def test_no_jobs_column_has_a_default(backend: SQLiteBackend) -> None:
    """INSERTs leave out a job's None columns, which is storing NULL only while no
    column has a DEFAULT; a migration adding one must make those INSERTs bind it."""
    info = backend._connection().execute("PRAGMA table_info(jobs)").fetchall()
    assert [r[1] for r in info] == list(queries.COLUMNS)  # same columns, same order
    assert [r[1] for r in info if r[4] is not None] == []


def test_complete_and_claim_is_one_transaction_and_all_or_nothing(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.enqueue_many([make_job() for _ in range(6)], now=NOW)
    first = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=3)
    acks = [(j.id, j.lease or "", b"1", NOW + 60) for j in first]
    acks[1] = (first[1].id, "stale", None, None)
    conn = backend._connection()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        done, claimed = backend.complete_and_claim(
            acks, ["default"], worker_id="w", now=NOW + 1, lease=30, limit=10
        )
    finally:
        conn.set_trace_callback(None)
    assert done == [True, False, True]
    assert len(claimed) == 3 and {j.id for j in claimed}.isdisjoint(j.id for j in first)
    assert all(j.state is JobState.RUNNING and j.lease for j in claimed)
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sum(s == "COMMIT" for s in statements) == 1
    assert [backend.get(j.id).state for j in first] == [  # type: ignore[union-attr]
        JobState.SUCCEEDED, JobState.RUNNING, JobState.SUCCEEDED
    ]
    assert backend.stats(since=NOW - 120)[-1][1] == 2
    # no acks: a plain claim (nothing due here)
    assert backend.complete_and_claim([], ["default"], worker_id="w", now=NOW + 2, lease=30) == (
        [], []
    )

    # a claim that fails takes the acknowledgements with it: they are not stored
    def broken(*args: object, **kwargs: object) -> list[list[Any]]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(backend, "_claim_in", broken)
    with pytest.raises(BackendUnavailable):
        backend.complete_and_claim(
            [(claimed[0].id, claimed[0].lease or "", None, None)], ["default"],
            worker_id="w", now=NOW + 3, lease=30, limit=1,
        )
    assert backend.get(claimed[0].id).state is JobState.RUNNING  # type: ignore[union-attr]


@pytest.mark.parametrize("window", [5, 2000])
def test_list_jobs_by_state_matches_a_filter_of_every_job(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """Each state is read its own way (migration 6): pending from the newest rows or,
    when they do not fill the page, from jobs_claim; the pages must be the same."""
    monkeypatch.setattr(sqlite_module, "_PENDING_WINDOW", window)
    old_pending = [make_job(queue=f"q{i % 2}", run_at=NOW + 3600) for i in range(7)]
    backend.enqueue_many(old_pending, now=NOW)  # scheduled: oldest jobs, still pending
    backend.enqueue_many([make_job(queue=f"q{i % 2}") for i in range(40)], now=NOW)
    claimed = backend.claim(["q0", "q1"], worker_id="w", now=NOW, lease=30, limit=30)
    for i, job in enumerate(claimed[:24]):
        token = job.lease or ""
        if i % 3 == 0:
            backend.fail(job.id, token, now=NOW, error="{}", expires_at=None)
        elif i % 3 == 1:
            backend.complete(job.id, token, now=NOW, result=None, expires_at=None)
        else:
            backend.abort(job.id, token, now=NOW, error="{}", expires_at=None)
    backend.enqueue_many([make_job(queue=f"q{i % 2}") for i in range(3)], now=NOW)
    every = backend.list_jobs(limit=1000)
    assert len(every) == 50
    for state in JobState:
        for queue in (None, "q1"):
            expected = [j.id for j in every
                        if j.state is state and (queue is None or j.queue == queue)]
            for size in (1, 4, 100):
                got: list[str] = []
                cursor = None
                while True:
                    page = backend.list_jobs(state=state.value, queue=queue, limit=size,
                                             cursor=cursor)
                    assert all(j.state is state for j in page)
                    got += [j.id for j in page]
                    if len(page) < size:
                        break
                    cursor = page[-1].id
                assert got == expected, (state, queue, size)
    assert backend.list_jobs(state="no-such-state") == []
