"""The SQLite inbox (migration 7): single enqueues land in ``inbox``, claims and
cancels move it into ``jobs``, and every reader sees both tables as one.

Placement is checked through a raw ``sqlite3`` connection of its own, so a test
sees what is on disk rather than what the backend reports.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sqlite_backend import NOW, make_job

from spoolhouse.backends.base import CancelResult, TaskLimit
from spoolhouse.backends.sqlite import SQLiteBackend, queries
from spoolhouse.backends.sqlite import backend as sqlite_module
from spoolhouse.backends.sqlite.migrations import MIGRATIONS, SCHEMA_VERSION, split_statements
from spoolhouse.job import Job, JobBatch, JobState, new_job_id


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spool.db"


@pytest.fixture
def open_backend(db_path: Path) -> Iterator[Callable[..., SQLiteBackend]]:
    """Open SQLiteBackend objects (on ``db_path`` unless told); all closed at the end."""
    opened: list[SQLiteBackend] = []

    def opener(path: Path | None = None, query: str = "") -> SQLiteBackend:
        b = SQLiteBackend(f"sqlite:///{path or db_path}{query}")
        opened.append(b)
        return b

    yield opener
    for b in opened:
        b.close()


@pytest.fixture
def backend(open_backend: Callable[..., SQLiteBackend]) -> SQLiteBackend:
    return open_backend()


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def placement(path: Path) -> dict[str, int]:
    """How many rows each table holds, read on a connection of its own."""
    with raw(path) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("inbox", "jobs")
        }


def tables_holding(path: Path, job_id: str) -> list[str]:
    """Every table with a row of ``job_id``, once per row (a duplicate shows twice)."""
    with raw(path) as conn:
        return [
            table
            for table in ("inbox", "jobs")
            for _ in conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (job_id,))
        ]


def move_inbox(b: SQLiteBackend) -> bool:
    """What a worker's claim does first: move the whole inbox into jobs."""
    with b._write("claim") as conn:
        return b._absorb(conn)


def claim(b: SQLiteBackend, queues: list[str], limit: int = 1, **kw: Any) -> list[Job]:
    return b.claim(queues, worker_id="w", now=NOW, lease=30, limit=limit, **kw)


def pending_total(counts: dict[str, dict[str, int]]) -> int:
    return sum(by_state.get("pending", 0) for by_state in counts.values())


# -- where jobs land -----------------------------------------------------------------


def test_a_single_enqueue_lands_in_inbox_and_every_other_write_in_jobs(
    backend: SQLiteBackend, db_path: Path
) -> None:
    single = backend.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 1, "jobs": 0}
    assert tables_holding(db_path, single.id) == ["inbox"]

    keyed = backend.enqueue(make_job(key="k"), now=NOW)
    assert tables_holding(db_path, keyed.id) == ["jobs"]
    assert placement(db_path) == {"inbox": 1, "jobs": 1}  # a keyed enqueue does not move it
    many = backend.enqueue_many([make_job(), make_job(queue="mail")], now=NOW)
    # a bulk write moves the inbox first (its ON CONFLICT (id) only sees jobs)
    assert tables_holding(db_path, single.id) == ["jobs"]
    template = make_job(id="", payload=b"", queue="mail")
    batch_ids = [new_job_id(NOW) for _ in range(3)]
    backend.enqueue_batch(JobBatch(template, batch_ids, [b"[1]"] * 3, [None] * 3), now=NOW)
    ticked = backend.schedule_tick("nightly", NOW, make_job(), now=NOW)
    assert ticked is not None
    others = [keyed.id, *(j.id for j in many), *batch_ids, ticked.id]
    for job_id in others:
        assert tables_holding(db_path, job_id) == ["jobs"], job_id
    assert placement(db_path) == {"inbox": 0, "jobs": 8}

    # all_jobs shows both tables, column for column like jobs
    every = sorted([single.id, *others])
    with raw(db_path) as conn:
        rows = conn.execute("SELECT * FROM all_jobs ORDER BY id").fetchall()
        inbox_columns = [r[1] for r in conn.execute("PRAGMA table_info(inbox)")]
        jobs_columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    assert inbox_columns == jobs_columns == list(queries.COLUMNS)
    assert [queries._to_job(r) for r in rows] == [backend.get(job_id) for job_id in every]
    assert backend.get(single.id) == single
    assert backend.counts() == {"default": {"pending": 4}, "mail": {"pending": 4}}


def test_an_inbox_row_reads_back_as_the_record_enqueue_returned(
    backend: SQLiteBackend, db_path: Path
) -> None:
    # ints for REAL columns and optional columns set: stored as REAL, read as floats
    job = make_job(run_at=int(NOW), timeout=30, result_ttl=5, headers='{"t": "1"}', priority=-2)
    record = backend.enqueue(job, now=NOW)
    assert tables_holding(db_path, job.id) == ["inbox"]
    assert record == backend.get(job.id)
    assert type(record.run_at) is float and type(record.timeout) is float
    with raw(db_path) as conn:
        row = conn.execute(
            "SELECT typeof(state), typeof(abort_requested), typeof(run_at) FROM inbox"
        ).fetchone()
    assert row == ("text", "integer", "real")
    move_inbox(backend)
    assert tables_holding(db_path, job.id) == ["jobs"]
    assert backend.get(job.id) == record


def test_the_inbox_table_only_takes_pending_jobs_without_a_key(
    db_path: Path, backend: SQLiteBackend
) -> None:
    backend.counts()  # creates the file
    job = make_job()
    values = dict(zip(queries.COLUMNS, queries._to_row(job), strict=True))
    columns = ", ".join(queries.COLUMNS)
    marks = ", ".join("?" * len(queries.COLUMNS))
    insert = f"INSERT INTO inbox ({columns}) VALUES ({marks})"
    with raw(db_path) as conn:
        for bad in ({"state": "running"}, {"key": "k"}):
            row = {**values, **bad}
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
                conn.execute(insert, [row[c] for c in queries.COLUMNS])
        conn.execute(insert, [values[c] for c in queries.COLUMNS])  # the row itself is fine
    assert backend.get(job.id) == job


# -- retried enqueues ------------------------------------------------------------------


def _move_by_claim(b: SQLiteBackend) -> None:
    assert claim(b, ["elsewhere"]) == []


MOVERS: dict[str, Callable[[SQLiteBackend], object]] = {
    "claim-of-another-queue": _move_by_claim,
    "absorb": move_inbox,
}


@pytest.mark.parametrize("mover", list(MOVERS))
def test_a_retried_enqueue_stores_no_duplicate_before_or_after_the_move(
    backend: SQLiteBackend, db_path: Path, mover: str
) -> None:
    job = make_job(queue="mail")
    first = backend.enqueue(job, now=NOW)
    # a producer retrying (same id), even with other content: the stored job comes back
    again = backend.enqueue(job.replace(payload=b"changed"), now=NOW)
    assert again == first and again.payload == job.payload
    assert tables_holding(db_path, job.id) == ["inbox"]

    MOVERS[mover](backend)
    assert placement(db_path) == {"inbox": 0, "jobs": 1}
    assert backend.enqueue(job.replace(payload=b"changed"), now=NOW) == first
    assert tables_holding(db_path, job.id) == ["jobs"]  # not stored in inbox again
    assert backend.counts() == {"mail": {"pending": 1}}
    # moving again finds nothing to move and changes nothing
    assert move_inbox(backend) is False
    assert backend.get(job.id) == first

    # once claimed, a retry returns the running job and stores nothing either
    (running,) = claim(backend, ["mail"])
    assert backend.enqueue(job, now=NOW) == running
    assert tables_holding(db_path, job.id) == ["jobs"]
    assert backend.counts() == {"mail": {"running": 1}}
    assert claim(backend, ["mail"]) == []


def test_retries_are_not_counted_toward_the_producers_move(
    backend: SQLiteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_INBOX_MOVE_EVERY", 3)
    job = make_job()
    for _ in range(5):
        backend.enqueue(job, now=NOW)
    assert placement(db_path) == {"inbox": 1, "jobs": 0}


@pytest.mark.parametrize("path", ["enqueue_many", "enqueue_batch"])
def test_a_bulk_retry_of_an_id_still_in_inbox_stores_no_duplicate(
    backend: SQLiteBackend, db_path: Path, path: str
) -> None:
    job = make_job()
    first = backend.enqueue(job, now=NOW)
    assert tables_holding(db_path, job.id) == ["inbox"]
    changed = job.replace(payload=b"changed")
    if path == "enqueue_many":
        assert backend.enqueue_many([changed], now=NOW) == [first]
    else:
        template = changed.replace(id="", payload=b"")
        backend.enqueue_batch(JobBatch(template, [job.id], [b"changed"], [None]), now=NOW)
    # the bulk write moved the inbox first, then found the id stored: nothing changed
    assert backend.counts() == {"default": {"pending": 1}}
    assert tables_holding(db_path, job.id) == ["jobs"]
    assert backend.get(job.id) == first


# -- claims ------------------------------------------------------------------------------


def test_a_claim_on_an_idle_jobs_table_takes_the_inbox_job(
    backend: SQLiteBackend, db_path: Path
) -> None:
    job = backend.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 1, "jobs": 0}
    (claimed,) = claim(backend, ["default"], limit=5)
    assert claimed.id == job.id
    assert claimed.state is JobState.RUNNING and claimed.attempt == 1 and claimed.lease
    assert placement(db_path) == {"inbox": 0, "jobs": 1}
    assert backend.get(job.id) == claimed
    assert claim(backend, ["default"]) == []


def test_a_claim_of_another_queue_moves_the_inbox_but_claims_nothing(
    backend: SQLiteBackend, db_path: Path
) -> None:
    job = backend.enqueue(make_job(queue="mail"), now=NOW)
    assert claim(backend, ["default"], limit=5) == []
    assert placement(db_path) == {"inbox": 0, "jobs": 1}
    assert backend.get(job.id) == job  # still pending, untouched
    assert [j.id for j in claim(backend, ["mail"])] == [job.id]


def test_a_future_inbox_job_is_moved_but_not_claimed(backend: SQLiteBackend, db_path: Path) -> None:
    job = backend.enqueue(make_job(run_at=NOW + 60), now=NOW)
    assert claim(backend, ["default"]) == []
    assert placement(db_path) == {"inbox": 0, "jobs": 1}
    assert backend.get(job.id) == job
    later = backend.claim(["default"], worker_id="w", now=NOW + 60, lease=30)
    assert [j.id for j in later] == [job.id]


def test_claim_order_spans_inbox_and_jobs(
    open_backend: Callable[..., SQLiteBackend], tmp_path: Path
) -> None:
    def fill(name: str) -> tuple[SQLiteBackend, dict[str, Job]]:
        path = tmp_path / f"{name}.db"
        b = open_backend(path)
        jobs = {
            # in jobs
            "a": make_job(priority=0, run_at=NOW - 10),
            "b": make_job(priority=5, run_at=NOW - 5),
            "c": make_job(priority=5, run_at=NOW - 1),
            # in inbox
            "d": make_job(priority=9, run_at=NOW),
            "e": make_job(priority=5, run_at=NOW - 7),
            "f": make_job(priority=0, run_at=NOW - 20),
            "g": make_job(priority=9, run_at=NOW + 60),  # not due
            "h": make_job(priority=5, run_at=NOW - 1),  # same run_at as c, a later id
        }
        b.enqueue_many([jobs[k] for k in "abc"], now=NOW)
        for k in "defgh":
            b.enqueue(jobs[k], now=NOW)
        assert placement(path) == {"inbox": 5, "jobs": 3}
        return b, jobs

    # one claim: the inbox's higher priority beats the jobs table's
    b, jobs = fill("one")
    assert [j.id for j in claim(b, ["default"], limit=1)] == [jobs["d"].id]
    # all that is due, in one claim: priority, run_at, then id, whichever table held it
    b, jobs = fill("all")
    got = [j.id for j in claim(b, ["default"], limit=10)]
    assert got == [jobs[k].id for k in "debchfa"]

    # queues in the order given: an inbox job of the first queue before a jobs job of the next
    path = tmp_path / "queues.db"
    b = open_backend(path)
    (second,) = b.enqueue_many([make_job(queue="b", priority=9)], now=NOW)
    first = b.enqueue(make_job(queue="a"), now=NOW)
    assert [j.id for j in claim(b, ["a", "b"], limit=1)] == [first.id]
    assert [j.id for j in claim(b, ["a", "b"], limit=1)] == [second.id]


def test_claim_limits_apply_to_jobs_from_the_inbox(backend: SQLiteBackend) -> None:
    for _ in range(3):
        backend.enqueue(make_job(task="limited"), now=NOW)
    other = backend.enqueue(make_job(task="free"), now=NOW)
    claimed = claim(backend, ["default"], limit=5, limits={"limited": TaskLimit(concurrency=1)})
    assert sorted(j.task for j in claimed) == ["free", "limited"]
    assert other.id in {j.id for j in claimed}


def test_complete_and_claim_takes_inbox_jobs(backend: SQLiteBackend, db_path: Path) -> None:
    (held,) = backend.enqueue_many([make_job()], now=NOW)
    (running,) = claim(backend, ["default"])
    fresh = backend.enqueue(make_job(), now=NOW)
    assert tables_holding(db_path, fresh.id) == ["inbox"]
    done, claimed = backend.complete_and_claim(
        [(held.id, running.lease or "", None, None)],
        ["default"],
        worker_id="w",
        now=NOW,
        lease=30,
        limit=5,
    )
    assert done == [True]
    assert [j.id for j in claimed] == [fresh.id]
    assert placement(db_path) == {"inbox": 0, "jobs": 2}
    assert backend.counts() == {"default": {"running": 1, "succeeded": 1}}


def test_a_claim_takes_a_job_another_claim_moved_after_its_look(
    open_backend: Callable[..., SQLiteBackend], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, other_worker = open_backend(), open_backend()
    job = worker.enqueue(make_job(), now=NOW)
    original = worker._write
    moved: list[bool] = []

    @contextlib.contextmanager
    def write(op: str) -> Iterator[sqlite3.Connection]:
        if op == "claim" and not moved:
            # after the claim's look, before its write lock: another worker (of
            # another queue) claims, which moves the inbox into jobs
            moved.append(True)
            assert claim(other_worker, ["elsewhere"]) == []
        with original(op) as conn:
            yield conn

    monkeypatch.setattr(worker, "_write", write)
    claimed = claim(worker, ["default"])
    assert moved and placement(db_path) == {"inbox": 0, "jobs": 1}
    # the job was pending and due in jobs when the claim's transaction began
    assert [j.id for j in claimed] == [job.id]


# -- next_due ------------------------------------------------------------------------------


def test_next_due_sees_inbox_jobs(backend: SQLiteBackend, db_path: Path) -> None:
    assert backend.next_due(["default", "mail"], now=NOW) is None
    future = backend.enqueue(make_job(queue="mail", run_at=NOW + 60), now=NOW)
    assert placement(db_path) == {"inbox": 1, "jobs": 0}
    assert backend.next_due(["mail"], now=NOW) == NOW + 60
    assert backend.next_due(["default"], now=NOW) is None
    assert backend.next_due(["default", "mail"], now=NOW) == NOW + 60
    # an earlier one in jobs wins, and an earlier one in the inbox wins over that
    backend.enqueue_many([make_job(queue="mail", run_at=NOW + 30)], now=NOW)
    assert backend.next_due(["mail"], now=NOW) == NOW + 30
    due = backend.enqueue(make_job(queue="mail", run_at=NOW - 5, priority=-1), now=NOW)
    assert backend.next_due(["mail"], now=NOW) == NOW - 5
    assert backend.next_due(["default"], now=NOW) is None
    # the same answers once moved
    move_inbox(backend)
    assert placement(db_path) == {"inbox": 0, "jobs": 3}
    assert backend.next_due(["mail"], now=NOW) == NOW - 5
    # nothing pending: None
    assert [j.id for j in claim(backend, ["mail"], limit=5)] == [due.id]
    assert backend.next_due(["mail"], now=NOW) == NOW + 30
    for job in backend.list_jobs(state="pending"):
        assert backend.cancel(job.id, now=NOW) is CancelResult.CANCELLED
    assert backend.next_due(["mail"], now=NOW) is None
    # a cancelled inbox job is not due either
    gone = backend.enqueue(make_job(queue="mail"), now=NOW)
    assert backend.next_due(["mail"], now=NOW) == NOW
    assert backend.cancel(gone.id, now=NOW) is CancelResult.CANCELLED
    assert backend.next_due(["mail"], now=NOW) is None
    assert future.id not in {j.id for j in backend.list_jobs(state="pending")}


# -- readers ----------------------------------------------------------------------------


def test_get_finds_a_job_in_either_table(backend: SQLiteBackend, db_path: Path) -> None:
    job = backend.enqueue(make_job(headers='{"a": "b"}'), now=NOW)
    assert tables_holding(db_path, job.id) == ["inbox"]
    assert backend.get(job.id) == job
    move_inbox(backend)
    assert tables_holding(db_path, job.id) == ["jobs"]
    assert backend.get(job.id) == job
    assert backend.get(new_job_id(NOW)) is None


STATES = (None, "pending", "running", "succeeded", "cancelled")


def _pages(b: SQLiteBackend, size: int, **filters: Any) -> list[Job]:
    """Every page of a listing, cursor by cursor."""
    got: list[Job] = []
    cursor = None
    for _ in range(1000):
        page = b.list_jobs(limit=size, cursor=cursor, **filters)
        assert len(page) <= size
        got += page
        if len(page) < size:
            return got
        cursor = page[-1].id
    raise AssertionError("pagination did not end")


def _listings(b: SQLiteBackend) -> dict[tuple[Any, ...], list[Job]]:
    out: dict[tuple[Any, ...], list[Job]] = {}
    for state in STATES:
        for queue in (None, "q1"):
            for task in (None, "t1"):
                for size in (1, 4, 100):
                    out[state, queue, task, None, size] = _pages(
                        b, size, state=state, queue=queue, task=task
                    )
        for key in ("k", "none-such"):
            out[state, None, None, key, 100] = _pages(b, 100, state=state, key=key)
    return out


@pytest.mark.parametrize("window", [5, 2000])
def test_listings_and_counts_are_the_same_in_inbox_or_jobs(
    backend: SQLiteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    """The pending listing has two ways (the newest rows, or jobs_claim): both must
    merge the inbox into the same pages as when every job is in jobs."""
    monkeypatch.setattr(sqlite_module, "_PENDING_WINDOW", window)
    # older jobs in other states, all in jobs
    older = backend.enqueue_many(
        [make_job(queue=f"q{i % 2}", task=f"t{i % 3}") for i in range(8)], now=NOW
    )
    claimed = claim(backend, ["q0", "q1"], limit=8)
    for job in claimed[:3]:
        assert backend.complete(job.id, job.lease or "", now=NOW, result=None, expires_at=None)
    # pending jobs whose ids interleave between the two tables
    fresh = [
        make_job(
            queue=f"q{i % 2}",
            task=f"t{i % 3}",
            run_at=NOW + (3600 if i % 5 == 0 else 0),
            key="k" if i == 7 else None,
        )
        for i in range(30)
    ]
    for i, job in enumerate(fresh):
        if i % 3 == 0:
            backend.enqueue_many([job], now=NOW)
        else:
            backend.enqueue(job, now=NOW)
    move_inbox(backend)  # moves the inbox so far; more single enqueues follow
    later = [make_job(queue=f"q{i % 2}", task=f"t{i % 3}") for i in range(10)]
    for job in later:
        backend.enqueue(job, now=NOW)
    where = placement(db_path)
    assert where["inbox"] == 10 and where["jobs"] == 38

    before = _listings(backend)
    counts_before = backend.counts()
    assert move_inbox(backend)
    assert placement(db_path) == {"inbox": 0, "jobs": 48}
    after = _listings(backend)
    assert backend.counts() == counts_before

    # the same pages either way, and the pages a filter of every job makes
    every = sorted(
        (backend.get(j.id) for j in [*older, *fresh, *later]), key=lambda j: j.id, reverse=True
    )
    assert all(j is not None for j in every)
    for (state, queue, task, key, size), page in after.items():
        expected = [
            j
            for j in every
            if j is not None
            and (state is None or j.state.value == state)
            and (queue is None or j.queue == queue)
            and (task is None or j.task == task)
            and (key is None or j.key == key)
        ]
        assert page == expected, (state, queue, task, key, size)
        assert before[state, queue, task, key, size] == page, (state, queue, task, key, size)
    expected_counts: dict[str, dict[str, int]] = {}
    for j in every:
        assert j is not None
        by_state = expected_counts.setdefault(j.queue, {})
        by_state[j.state.value] = by_state.get(j.state.value, 0) + 1
    assert counts_before == expected_counts
    assert backend.list_jobs(limit=0) == []


def test_listings_match_a_store_filled_by_enqueue_many(
    open_backend: Callable[..., SQLiteBackend], tmp_path: Path
) -> None:
    jobs = [make_job(queue=f"q{i % 2}", task=f"t{i % 3}", run_at=NOW + i) for i in range(12)]
    inboxed = open_backend(tmp_path / "inboxed.db")
    for job in jobs:
        inboxed.enqueue(job, now=NOW)
    assert placement(tmp_path / "inboxed.db") == {"inbox": 12, "jobs": 0}
    bulk = open_backend(tmp_path / "bulk.db")
    bulk.enqueue_many(jobs, now=NOW)
    assert _listings(inboxed) == _listings(bulk)
    assert inboxed.counts() == bulk.counts()
    assert inboxed.next_due(["q0", "q1"], now=NOW) == bulk.next_due(["q0", "q1"], now=NOW)


# -- cancel ------------------------------------------------------------------------------


def test_cancel_of_a_job_still_in_the_inbox(backend: SQLiteBackend, db_path: Path) -> None:
    job = backend.enqueue(make_job(result_ttl=60.0), now=NOW)
    keep = backend.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 2, "jobs": 0}
    assert backend.cancel(job.id, now=NOW + 1) is CancelResult.CANCELLED
    # cancel moves its own job only
    assert placement(db_path) == {"inbox": 1, "jobs": 1}
    assert tables_holding(db_path, keep.id) == ["inbox"]
    cancelled = backend.get(job.id)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at == NOW + 1 and cancelled.expires_at == NOW + 61
    assert backend.cancel(job.id, now=NOW) is CancelResult.NOOP
    assert [j.id for j in backend.list_jobs(state="cancelled")] == [job.id]
    assert backend.counts() == {"default": {"cancelled": 1, "pending": 1}}
    assert [j.id for j in claim(backend, ["default"], limit=5)] == [keep.id]
    assert claim(backend, ["default"], limit=5) == []
    # a retried enqueue of the cancelled id does not bring it back
    assert backend.enqueue(job, now=NOW) == cancelled
    assert placement(db_path) == {"inbox": 0, "jobs": 2}


# -- the producer's own move -------------------------------------------------------------


def test_a_producer_moves_the_inbox_after_every_few_jobs_it_put_there(
    open_backend: Callable[..., SQLiteBackend], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_INBOX_MOVE_EVERY", 5)
    producer = open_backend()
    stored = [producer.enqueue(make_job(), now=NOW) for _ in range(4)]
    assert placement(db_path) == {"inbox": 4, "jobs": 0}
    stored.append(producer.enqueue(make_job(), now=NOW))
    assert placement(db_path) == {"inbox": 0, "jobs": 5}
    stored.append(producer.enqueue(make_job(), now=NOW))
    assert placement(db_path) == {"inbox": 1, "jobs": 5}
    # keyed jobs and bulk writes do not count toward it
    producer.enqueue(make_job(key="k"), now=NOW)
    producer.enqueue_many([make_job() for _ in range(5)], now=NOW)  # moves the inbox first
    assert placement(db_path) == {"inbox": 0, "jobs": 12}
    # counted per backend object: another producer's jobs do not add to this one's
    other = open_backend()
    for _ in range(3):
        other.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 3, "jobs": 12}
    for _ in range(4):
        stored.append(producer.enqueue(make_job(), now=NOW))
    assert placement(db_path) == {"inbox": 0, "jobs": 19}  # all of it, not just its own
    for job in stored:
        assert producer.get(job.id) == job


def test_below_the_threshold_the_inbox_stays(
    backend: SQLiteBackend, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_INBOX_MOVE_EVERY", 50)
    for _ in range(49):
        backend.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 49, "jobs": 0}
    backend.enqueue(make_job(), now=NOW)
    assert placement(db_path) == {"inbox": 0, "jobs": 50}



def test_a_single_enqueue_is_one_statement_until_the_producers_move(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between its moves, a producer's keyless enqueue is one INSERT run as its own
    transaction (no BEGIN/COMMIT round); the move turn is a transaction with the move."""
    monkeypatch.setattr(sqlite_module, "_INBOX_MOVE_EVERY", 3)
    backend.enqueue(make_job(), now=NOW)  # opens the connection and the schema
    conn = backend._connection()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        backend.enqueue(make_job(), now=NOW)
        writes = [sql for sql in seen if not sql.startswith("PRAGMA")]
        assert len(writes) == 1 and writes[0].startswith("INSERT INTO inbox"), seen
        seen.clear()
        backend.enqueue(make_job(), now=NOW)  # the third: this producer's turn to move
        assert seen[0] == "BEGIN IMMEDIATE" and seen[-1] == "COMMIT", seen
        assert any("INSERT INTO jobs" in sql for sql in seen), seen
    finally:
        conn.set_trace_callback(None)
    assert backend.counts() == {"default": {"pending": 3}}


def test_a_single_enqueue_that_finds_its_id_stored_returns_the_stored_record(
    backend: SQLiteBackend, db_path: Path
) -> None:
    job = make_job()
    first = backend.enqueue(job, now=NOW)
    # taken by a worker meanwhile: the retry reads it back, whichever table holds it
    (running,) = claim(backend, ["default"])
    assert backend.enqueue(job.replace(payload=b"changed"), now=NOW) == running
    assert running.id == first.id and placement(db_path) == {"inbox": 0, "jobs": 1}


# -- concurrency -------------------------------------------------------------------------


def test_readers_never_lose_a_job_while_the_inbox_moves(
    open_backend: Callable[..., SQLiteBackend], db_path: Path
) -> None:
    """A producer, a reader and a mover, each with a backend object (and connection) of
    its own: every id enqueue returned is found by get and list_jobs, and the pending
    count never drops below what was stored nor goes down (nothing is claimed)."""
    n = 1000
    deadline = time.monotonic() + 8.0
    producer, reader, mover = (open_backend(query="?synchronous=NORMAL") for _ in range(3))
    producer.counts()  # the schema is made once, here
    returned: list[str] = []
    changed = threading.Condition()  # guards returned and progress
    # asked: the producer's requests; moved_for, read_for: the last request
    # the mover and the reader had seen when their latest move or round began
    progress = {"moves": 0, "reads": 0, "asked": 0, "moved_for": 0, "read_for": 0}
    done = threading.Event()
    errors: list[BaseException] = []
    problems: list[str] = []

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    def produce() -> None:
        try:
            for i in range(n):
                if time.monotonic() > deadline:
                    problems.append("the producer ran out of time")
                    return
                job_id = producer.enqueue(make_job(), now=NOW).id
                with changed:
                    returned.append(job_id)
                    if i % 100 != 49:
                        changed.notify_all()
                        continue
                    # now and then (never at a producer's own move, every 250 jobs),
                    # wait for a move and a read round begun after this enqueue: so
                    # that neither thread can sit out the run on a busy machine
                    progress["asked"] = asked = progress["asked"] + 1
                    changed.notify_all()
                    if not changed.wait_for(
                        lambda k=asked: progress["moved_for"] >= k and progress["read_for"] >= k,
                        timeout=remaining(),
                    ):
                        problems.append(f"the mover or the reader stalled: {progress}")
                        return
        except BaseException as exc:
            errors.append(exc)
        finally:
            with changed:
                done.set()
                changed.notify_all()

    def read() -> None:
        last = 0
        rounds = 0
        try:
            while time.monotonic() < deadline:
                finished = done.is_set()
                with changed:
                    seen, asked = list(returned), progress["asked"]
                total = pending_total(reader.counts())
                if total < last or total < len(seen):
                    problems.append(f"pending went from {last} to {total} with {len(seen)} stored")
                last = total
                # the newest ids are the ones a move may be carrying right now; every
                # 25th round (and the last) looks up every id and lists them all
                sweep = finished or rounds % 25 == 0
                for job_id in seen if sweep else seen[-4:]:
                    if reader.get(job_id) is None:
                        problems.append(f"get({job_id}) found nothing")
                if sweep:
                    listed = {j.id for j in reader.list_jobs(state="pending", limit=n)}
                    missing = set(seen) - listed
                    if missing:
                        problems.append(f"list_jobs missed {len(missing)} stored jobs")
                rounds += 1
                with changed:
                    progress["reads"], progress["read_for"] = rounds, asked
                    changed.notify_all()
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    def move() -> None:
        try:
            while not done.is_set() and time.monotonic() < deadline:
                with changed:
                    seen, served = len(returned), progress["asked"]
                moved = move_inbox(mover)
                with changed:
                    progress["moves"] += moved
                    progress["moved_for"] = served
                    changed.notify_all()
                    # the next move once something was stored (or was asked for)
                    changed.wait_for(
                        lambda s=seen, a=served: (
                            len(returned) > s or progress["asked"] > a or done.is_set()
                        ),
                        timeout=remaining(),
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, daemon=True) for f in (produce, read, move)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=remaining() + 2.0)
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"
    assert errors == [], errors
    assert problems == [], problems[:5]
    assert len(returned) == len(set(returned)) == n
    assert progress["moves"] > 0 and progress["reads"] > 1, progress
    where = placement(db_path)
    assert where["inbox"] + where["jobs"] == n
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(DISTINCT id) FROM all_jobs").fetchone()[0] == n
    assert reader.counts() == {"default": {"pending": n}}


# -- migration -----------------------------------------------------------------------------


def _v6_jobs() -> list[Job]:
    ids = iter(sorted(new_job_id(NOW) for _ in range(7)))
    return [
        make_job(id=next(ids), queue="mail", priority=5, key="k-pending"),
        make_job(id=next(ids), queue="mail", run_at=NOW + 3600, timeout=30.0),
        make_job(id=next(ids), queue="mail", priority=-1, run_at=NOW - 1, headers='{"t": "1"}'),
        make_job(
            id=next(ids),
            state=JobState.RUNNING,
            attempt=1,
            started_at=NOW,
            worker_id="w1",
            lease="0123456789abcdef",
            lease_expires_at=NOW + 30,
        ),
        make_job(
            id=next(ids),
            state=JobState.SUCCEEDED,
            attempt=1,
            started_at=NOW,
            finished_at=NOW + 1,
            worker_id="w1",
            result=b"\x00r",
            expires_at=NOW + 61,
        ),
        make_job(id=next(ids), state=JobState.CANCELLED, finished_at=NOW, error='{"c": 1}'),
        make_job(id=next(ids), queue="reports", run_at=NOW - 60),
    ]


def test_a_version_6_file_opens_at_7_with_an_empty_inbox(db_path: Path) -> None:
    # a file as migrations 1-6 left it, written with plain SQL
    assert [m.version for m in MIGRATIONS[:7]] == list(range(1, 8))
    with raw(db_path) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        for migration in MIGRATIONS[:6]:
            for statement in split_statements(migration.sql):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 6")
        conn.execute("COMMIT")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
        assert "inbox" not in names and "all_jobs" not in names
        v6 = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        jobs = _v6_jobs()
        for job in jobs:
            values = dict(zip(queries.COLUMNS, queries._to_row(job), strict=True))
            marks = ", ".join("?" * len(v6))
            conn.execute(
                f"INSERT INTO jobs ({', '.join(v6)}) VALUES ({marks})", [values[c] for c in v6]
            )

    b = SQLiteBackend(f"sqlite:///{db_path}")
    try:
        assert b.schema_version() == SCHEMA_VERSION >= 7
        b.check_integrity(full=True)
        assert placement(db_path) == {"inbox": 0, "jobs": len(jobs)}
        with raw(db_path) as conn:
            kinds = dict(
                conn.execute(
                    "SELECT name, type FROM sqlite_schema WHERE name IN ('inbox', 'all_jobs')"
                ).fetchall()
            )
            viewed = conn.execute("SELECT * FROM all_jobs ORDER BY id").fetchall()
        assert kinds == {"inbox": "table", "all_jobs": "view"}
        assert [queries._to_job(r) for r in viewed] == jobs
        for job in jobs:
            assert b.get(job.id) == job
        newest_first = sorted(jobs, key=lambda j: j.id, reverse=True)
        assert b.list_jobs(limit=100) == newest_first
        assert b.list_jobs(state="pending", queue="mail") == [
            j for j in newest_first if j.state is JobState.PENDING and j.queue == "mail"
        ]
        assert b.counts() == {
            "default": {"running": 1, "succeeded": 1, "cancelled": 1},
            "mail": {"pending": 3},
            "reports": {"pending": 1},
        }
        assert b.next_due(["mail", "reports"], now=NOW) == NOW - 60
        # new single enqueues go to the inbox and are claimed with the old jobs, in order
        fresh = b.enqueue(make_job(queue="mail", priority=1), now=NOW)
        assert placement(db_path) == {"inbox": 1, "jobs": len(jobs)}
        claimed = claim(b, ["mail", "reports"], limit=10)
        assert [j.id for j in claimed] == [jobs[0].id, fresh.id, jobs[2].id, jobs[6].id]
        assert placement(db_path) == {"inbox": 0, "jobs": len(jobs) + 1}
        b.check_integrity(full=True)
    finally:
        b.close()
