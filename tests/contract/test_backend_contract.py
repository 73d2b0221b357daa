"""The backend contract, checked against every backend.

Each test reads one rule from the docstrings of
:class:`spoolhouse.backends.base.Backend` and uses nothing but the ``backend``
fixture and the protocol's methods, so a new backend is finished when this
file passes unchanged against it. Time is always a fixed ``now``; nothing here
reads the clock except the two ``wait`` tests, which measure a real wake-up.
"""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest

from spoolhouse.backends.base import Backend, CancelResult, LeaseState
from spoolhouse.job import FINAL_STATES, Job, JobBatch, JobState, new_job_id

NOW = 1_700_000_000.0
LEASE = 30.0
WORKER = "host-1:4242"
ERROR = '{"type": "ValueError", "message": "boom", "traceback": "", "reason": "error"}'
LOST_ERROR = '{"type": "WorkerLost", "message": "", "traceback": "", "reason": "worker_lost"}'

_BASE_MS = int((NOW - 3600) * 1000)
_counter = 0


def make_job(
    *,
    created: float | None = None,
    queue: str = "default",
    task: str = "tasks.noop",
    **fields: Any,
) -> Job:
    """A pending job due at ``NOW``.

    Ids are time-ordered, so each call without ``created`` advances the
    creation time by one millisecond: jobs made later have larger ids.
    """
    global _counter
    if created is None:
        _counter += 1
        # half a millisecond past the tick, so float rounding never merges two ids' times
        created = (_BASE_MS + _counter + 0.5) / 1000
    fields.setdefault("run_at", NOW)
    fields.setdefault("payload", b"[[], {}]")
    return Job(id=new_job_id(created), task=task, queue=queue, created_at=created, **fields)


def put(backend: Backend, **fields: Any) -> Job:
    job = make_job(**fields)
    stored = backend.enqueue(job, now=NOW)
    assert stored.id == job.id
    return stored


def claim_one(backend: Backend, queue: str = "default", *, now: float = NOW) -> Job:
    jobs = backend.claim([queue], worker_id=WORKER, now=now, lease=LEASE, limit=1)
    assert len(jobs) == 1, f"expected one due job in {queue!r}, got {jobs!r}"
    return jobs[0]


def running(backend: Backend, **fields: Any) -> Job:
    """Enqueue a job and claim it; returns the running record (with its lease token)."""
    job = put(backend, **fields)
    claimed = claim_one(backend, job.queue)
    assert claimed.id == job.id
    return claimed


def must_get(backend: Backend, job_id: str) -> Job:
    job = backend.get(job_id)
    assert job is not None, f"job {job_id} is missing"
    return job


FLOAT_FIELDS = (
    "run_at",
    "timeout",
    "created_at",
    "started_at",
    "finished_at",
    "lease_expires_at",
    "result_ttl",
    "expires_at",
)


def assert_same_record(got: Job, want: Job) -> None:
    """Equal values and equal Python types (a float stays a float, a bool a bool)."""
    assert got == want
    assert type(got.state) is JobState
    for name in FLOAT_FIELDS:
        value = getattr(got, name)
        assert value is None or type(value) is float, f"{name} came back as {type(value)}"
    for name in ("priority", "attempt", "max_attempts", "lost"):
        assert type(getattr(got, name)) is int, f"{name} came back as {type(getattr(got, name))}"
    assert type(got.abort_requested) is bool
    assert type(got.payload) is bytes
    assert got.result is None or type(got.result) is bytes


# -- enqueue / get ---------------------------------------------------------------


def test_enqueue_get_round_trips_every_field(backend: Backend) -> None:
    job = Job(
        id=new_job_id(NOW),
        task="app.tasks.send_email",
        queue="mail",
        payload=b"\x00\xff\xfe binary \x80 not utf-8",
        state=JobState.PENDING,
        priority=-7,
        run_at=NOW + 0.123456,
        attempt=0,
        max_attempts=5,
        timeout=12.5,
        key="signup:42",
        created_at=NOW - 0.000125,
        started_at=NOW - 10.25,
        finished_at=NOW - 5.5,
        worker_id="w-9",
        lease="feedbeef",
        lease_expires_at=NOW + 99.75,
        lost=2,
        result=b"\x01\x02\x00",
        result_ttl=86400.5,
        expires_at=NOW + 3.0,
        error='{"type": "E", "message": "unicode \u2713"}',
        progress='{"current": 1, "total": 3}',
        abort_requested=True,
        headers='{"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"}',
    )
    stored = backend.enqueue(job, now=NOW)
    assert_same_record(stored, job)
    assert_same_record(must_get(backend, job.id), job)


def test_enqueue_round_trips_defaults(backend: Backend) -> None:
    job = Job(id=new_job_id(NOW), task="t", queue="q", payload=b"")
    backend.enqueue(job, now=NOW)
    got = must_get(backend, job.id)
    assert_same_record(got, job)
    assert got.payload == b""
    assert got.timeout is None and got.key is None and got.result is None
    assert got.abort_requested is False


def test_get_missing_returns_none(backend: Backend) -> None:
    assert backend.get(new_job_id(NOW)) is None


def test_unique_key_returns_the_pending_job(backend: Backend) -> None:
    first = put(backend, key="k1")
    second = make_job(key="k1", payload=b"other")
    got = backend.enqueue(second, now=NOW)
    assert got.id == first.id
    assert got.payload == first.payload
    assert backend.get(second.id) is None
    assert backend.counts() == {"default": {"pending": 1}}


def test_unique_key_returns_the_running_job(backend: Backend) -> None:
    first = running(backend, key="k1")
    got = backend.enqueue(make_job(key="k1"), now=NOW)
    assert got.id == first.id
    assert got.state is JobState.RUNNING
    assert backend.counts() == {"default": {"running": 1}}


@pytest.mark.parametrize("final", ["failed", "cancelled"])
def test_unique_key_is_free_once_the_job_failed_or_was_cancelled(
    backend: Backend, final: str
) -> None:
    if final == "cancelled":
        first = put(backend, key="k1")
        assert backend.cancel(first.id, now=NOW) is CancelResult.CANCELLED
    else:
        first = running(backend, key="k1")
        assert first.lease is not None
        assert backend.fail(first.id, first.lease, now=NOW, error=ERROR, expires_at=None)
    second = make_job(key="k1")
    got = backend.enqueue(second, now=NOW)
    assert got.id == second.id
    assert must_get(backend, first.id).state == final
    assert must_get(backend, second.id).state is JobState.PENDING


def test_succeeded_job_holds_its_key_until_it_expires(backend: Backend) -> None:
    first = running(backend, key="k1")
    assert first.lease is not None
    assert backend.complete(first.id, first.lease, now=NOW, result=None, expires_at=NOW + 100)
    # an enqueue retried after an ambiguous failure finds the finished job
    assert backend.enqueue(make_job(key="k1"), now=NOW + 99).id == first.id
    assert backend.enqueue_many([make_job(key="k1")], now=NOW + 99)[0].id == first.id
    # once its expiry passed, the key is free even before prune removed the row
    second = make_job(key="k1")
    assert backend.enqueue(second, now=NOW + 100).id == second.id
    assert must_get(backend, first.id).state is JobState.SUCCEEDED


def test_succeeded_job_without_expiry_holds_its_key(backend: Backend) -> None:
    first = running(backend, key="k1")
    assert first.lease is not None
    assert backend.complete(first.id, first.lease, now=NOW, result=None, expires_at=None)
    assert backend.enqueue(make_job(key="k1"), now=NOW + 10**6).id == first.id


def test_different_keys_and_no_key_do_not_collide(backend: Backend) -> None:
    a = put(backend, key="a")
    b = put(backend, key="b")
    c = put(backend)
    d = put(backend)
    assert len({a.id, b.id, c.id, d.id}) == 4
    assert backend.counts() == {"default": {"pending": 4}}


def test_enqueue_many_stores_all_in_order(backend: Backend) -> None:
    jobs = [make_job(queue=q) for q in ("a", "b", "a", "c")]
    stored = backend.enqueue_many(jobs, now=NOW)
    assert [j.id for j in stored] == [j.id for j in jobs]
    for job in jobs:
        assert_same_record(must_get(backend, job.id), job)
    assert backend.counts() == {"a": {"pending": 2}, "b": {"pending": 1}, "c": {"pending": 1}}


def test_enqueue_many_empty(backend: Backend) -> None:
    assert backend.enqueue_many([], now=NOW) == []
    assert backend.counts() == {}


def test_enqueue_many_applies_the_key_rule_within_the_batch(backend: Backend) -> None:
    existing = put(backend, key="old")
    batch = [
        make_job(key="new"),
        make_job(key="old"),
        make_job(key="new"),
        make_job(),
    ]
    stored = backend.enqueue_many(batch, now=NOW)
    assert [j.id for j in stored] == [batch[0].id, existing.id, batch[0].id, batch[3].id]
    assert backend.get(batch[1].id) is None
    assert backend.get(batch[2].id) is None
    assert backend.counts() == {"default": {"pending": 3}}


@pytest.mark.parametrize("headers", ["none", "each", "some"])
def test_enqueue_batch_stores_what_enqueue_many_stores(backend: Backend, headers: str) -> None:
    """The optional ``enqueue_batch`` (see ``enqueue_many``'s docstring) stores each job of
    a keyless batch as ``enqueue_many(batch.jobs())`` would; a retried batch changes
    nothing. A backend without it is held to the same through the fallback."""
    store = getattr(backend, "enqueue_batch", None)
    if store is None:
        def store(batch: JobBatch, *, now: float) -> None:
            backend.enqueue_many(batch.jobs(), now=now)

    template = make_job(queue="mail", priority=2, timeout=30.0, result_ttl=60.0,
                        max_attempts=3).replace(id="", payload=b"")

    def batch_of(n: int) -> JobBatch:
        ids = [make_job().id for _ in range(n)]
        heads = {
            "none": [None] * n,
            "each": [f'{{"trace":"{i}"}}' for i in range(n)],
            "some": [None if i % 2 else f'{{"trace":"{i}"}}' for i in range(n)],
        }[headers]
        return JobBatch(template, ids,
                        [f"[[{i}], {{}}]".encode() for i in range(n)], heads)

    by_batch, by_many = batch_of(5), batch_of(5)
    store(by_batch, now=NOW)
    backend.enqueue_many(by_many.jobs(), now=NOW)
    for mine, theirs in zip(by_batch.jobs(), by_many.jobs(), strict=True):
        stored, reference = must_get(backend, mine.id), must_get(backend, theirs.id)
        assert_same_record(stored, mine)
        assert stored.replace(id=reference.id) == reference
    again = JobBatch(by_batch.template, by_batch.ids, [b"[[9], {}]"] * 5, by_batch.headers)
    store(again, now=NOW)
    assert [must_get(backend, i).payload for i in by_batch.ids] == list(by_batch.payloads)
    assert backend.counts() == {"mail": {"pending": 10}}


def test_enqueue_many_is_all_or_nothing(backend: Backend) -> None:
    # The last job cannot be stored by a backend that checks its input (the
    # payload is not bytes). Whatever the backend does with it, the batch is
    # stored whole or not at all.
    good = [make_job(), make_job()]
    bad = make_job(payload=cast(Any, object()))
    try:
        backend.enqueue_many([*good, bad], now=NOW)
    except Exception:
        assert [backend.get(j.id) for j in good] == [None, None]
        assert backend.counts() == {}
    else:
        assert all(backend.get(j.id) is not None for j in good)


# -- claim ---------------------------------------------------------------------


def test_claim_takes_only_due_jobs(backend: Backend) -> None:
    later = put(backend, run_at=NOW + 10)
    assert backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE) == []
    assert backend.claim(["default"], worker_id=WORKER, now=NOW + 9.999, lease=LEASE) == []
    got = claim_one(backend, now=NOW + 10)  # run_at <= now: due at exactly run_at
    assert got.id == later.id


def test_claim_sets_the_running_fields(backend: Backend) -> None:
    job = put(backend, max_attempts=3)
    now = NOW + 1.5
    [got] = backend.claim(["default"], worker_id="w-7", now=now, lease=12.5, limit=5)
    assert got.id == job.id
    assert got.state is JobState.RUNNING
    assert got.attempt == 1
    assert got.started_at == now
    assert got.worker_id == "w-7"
    assert isinstance(got.lease, str) and got.lease
    assert got.lease_expires_at == now + 12.5
    assert got.payload == job.payload and got.max_attempts == 3
    assert_same_record(must_get(backend, job.id), got)


def test_claim_serves_queues_in_the_order_given(backend: Backend) -> None:
    a_old = put(backend, queue="a", priority=100, run_at=NOW - 100)
    b1 = put(backend, queue="b")
    b2 = put(backend, queue="b")
    got = backend.claim(["b", "a"], worker_id=WORKER, now=NOW, lease=LEASE, limit=1)
    assert [j.id for j in got] == [b1.id]
    got = backend.claim(["b", "a"], worker_id=WORKER, now=NOW, lease=LEASE, limit=5)
    assert [j.id for j in got] == [b2.id, a_old.id]


def test_claim_ignores_queues_not_asked_for(backend: Backend) -> None:
    other = put(backend, queue="other")
    assert backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=10) == []
    assert must_get(backend, other.id).state is JobState.PENDING


def test_claim_order_is_priority_then_run_at_then_id(backend: Backend) -> None:
    # created in an order unrelated to the expected claim order
    low_old = put(backend, priority=0, run_at=NOW - 50)
    tie_second = put(backend, priority=5, run_at=NOW - 10)
    high = put(backend, priority=9, run_at=NOW)
    tie_first_by_run_at = put(backend, priority=5, run_at=NOW - 20)
    tie_third = put(backend, priority=5, run_at=NOW - 10)
    negative = put(backend, priority=-3, run_at=NOW - 1000)
    expected = [high, tie_first_by_run_at, tie_second, tie_third, low_old, negative]
    assert tie_second.id < tie_third.id
    got = backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=10)
    assert [j.id for j in got] == [j.id for j in expected]


def test_claim_respects_limit(backend: Backend) -> None:
    jobs = [put(backend) for _ in range(5)]
    first = backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=2)
    second = backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=2)
    third = backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=2)
    fourth = backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=2)
    assert [len(first), len(second), len(third), len(fourth)] == [2, 2, 1, 0]
    assert [j.id for j in first + second + third] == [j.id for j in jobs]


def test_claim_limit_spans_queues(backend: Backend) -> None:
    put(backend, queue="a")
    put(backend, queue="a")
    b = put(backend, queue="b")
    got = backend.claim(["a", "b"], worker_id=WORKER, now=NOW, lease=LEASE, limit=3)
    assert [j.queue for j in got] == ["a", "a", "b"]
    assert got[2].id == b.id
    assert backend.counts() == {"a": {"running": 2}, "b": {"running": 1}}


def test_claim_never_returns_a_job_twice(backend: Backend) -> None:
    job = put(backend)
    first = claim_one(backend)
    assert first.id == job.id
    assert backend.claim(["default"], worker_id="other", now=NOW + 1000, lease=LEASE) == []


def test_claim_skips_jobs_that_are_not_pending(backend: Backend) -> None:
    done = running(backend)
    assert done.lease is not None
    backend.complete(done.id, done.lease, now=NOW, result=None, expires_at=None)
    cancelled = put(backend)
    backend.cancel(cancelled.id, now=NOW)
    assert backend.claim(["default"], worker_id=WORKER, now=NOW, lease=LEASE, limit=10) == []


def test_claim_gives_a_fresh_token_per_attempt(backend: Backend) -> None:
    first = running(backend, max_attempts=3)
    assert first.lease is not None
    assert backend.retry(first.id, first.lease, now=NOW, run_at=NOW, error=ERROR)
    second = claim_one(backend)
    assert second.id == first.id
    assert second.attempt == 2
    assert second.lease is not None and second.lease != first.lease
    # and tokens differ between jobs
    other = running(backend)
    assert other.lease != second.lease


def test_concurrent_claims_take_each_job_exactly_once(backend: Backend) -> None:
    jobs = backend.enqueue_many([make_job() for _ in range(200)], now=NOW)
    claimed: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(slot: int) -> None:
        try:
            start.wait(timeout=10)
            while True:
                got = backend.claim(
                    ["default"], worker_id=f"t{slot}", now=NOW, lease=LEASE, limit=3
                )
                if not got:
                    return
                claimed[slot].extend(j.id for j in got)
        except BaseException as exc:  # reported below, a thread cannot fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == 200
    assert sorted(every) == sorted(j.id for j in jobs)
    assert backend.counts() == {"default": {"running": 200}}
    for slot, ids in enumerate(claimed):
        for job_id in ids[:3]:
            assert must_get(backend, job_id).worker_id == f"t{slot}"


# -- heartbeat and progress ----------------------------------------------------


def test_extend_leases_held_abort_and_lost(backend: Backend) -> None:
    held = running(backend)
    aborting = running(backend)
    done = running(backend)
    assert held.lease and aborting.lease and done.lease
    assert backend.cancel(aborting.id, now=NOW) is CancelResult.ABORTING
    assert backend.complete(done.id, done.lease, now=NOW, result=None, expires_at=None)
    missing = new_job_id(NOW)
    out = backend.extend_leases(
        {
            held.id: held.lease,
            aborting.id: aborting.lease,
            done.id: done.lease,
            missing: "nope",
        },
        now=NOW + 20,
        lease=60.0,
    )
    assert out == {
        held.id: LeaseState.HELD,
        aborting.id: LeaseState.ABORT,
        done.id: LeaseState.LOST,
        missing: LeaseState.LOST,
    }
    assert must_get(backend, held.id).lease_expires_at == NOW + 80.0
    assert must_get(backend, aborting.id).lease_expires_at == NOW + 80.0
    assert must_get(backend, done.id).state is JobState.SUCCEEDED


def test_extend_leases_with_a_stale_token_changes_nothing(backend: Backend) -> None:
    job = running(backend)
    assert backend.extend_leases({job.id: "stale"}, now=NOW + 5, lease=60.0) == {
        job.id: LeaseState.LOST
    }
    assert must_get(backend, job.id).lease_expires_at == NOW + LEASE


def test_extend_leases_empty(backend: Backend) -> None:
    assert backend.extend_leases({}, now=NOW, lease=LEASE) == {}


def test_set_progress(backend: Backend) -> None:
    job = running(backend)
    assert job.lease is not None
    progress = '{"current": 2, "total": 10, "message": "half"}'
    assert backend.set_progress(job.id, job.lease, progress) is LeaseState.HELD
    assert must_get(backend, job.id).progress == progress
    assert backend.set_progress(job.id, "stale", '{"current": 9}') is LeaseState.LOST
    assert must_get(backend, job.id).progress == progress
    backend.cancel(job.id, now=NOW)
    assert backend.set_progress(job.id, job.lease, '{"current": 3}') is LeaseState.ABORT
    assert backend.set_progress(new_job_id(NOW), "x", "{}") is LeaseState.LOST


# -- complete / retry / fail / release ---------------------------------------------


def test_complete(backend: Backend) -> None:
    job = running(backend)
    assert job.lease is not None
    assert backend.complete(job.id, job.lease, now=NOW + 3, result=b"\x00ok", expires_at=NOW + 60)
    got = must_get(backend, job.id)
    assert got.state is JobState.SUCCEEDED
    assert got.result == b"\x00ok"
    assert got.finished_at == NOW + 3
    assert got.expires_at == NOW + 60
    assert got.attempt == 1
    assert got.lease is None and got.lease_expires_at is None


def test_complete_without_result_or_expiry(backend: Backend) -> None:
    job = running(backend)
    assert job.lease is not None
    assert backend.complete(job.id, job.lease, now=NOW, result=None, expires_at=None)
    got = must_get(backend, job.id)
    assert got.state is JobState.SUCCEEDED
    assert got.result is None and got.expires_at is None


def test_transitions_with_a_stale_token_change_nothing(backend: Backend) -> None:
    job = running(backend, max_attempts=5)
    before = must_get(backend, job.id)
    assert not backend.complete(job.id, "stale", now=NOW, result=b"x", expires_at=None)
    assert not backend.retry(job.id, "stale", now=NOW, run_at=NOW, error=ERROR)
    assert not backend.fail(job.id, "stale", now=NOW, error=ERROR, expires_at=None)
    assert not backend.release(job.id, "stale", now=NOW)
    assert backend.rescue(job.id, "stale", now=NOW, max_lost=3, error=LOST_ERROR) is None
    assert backend.set_progress(job.id, "stale", "{}") is LeaseState.LOST
    assert_same_record(must_get(backend, job.id), before)


def test_transitions_on_a_missing_job(backend: Backend) -> None:
    missing = new_job_id(NOW)
    assert not backend.complete(missing, "t", now=NOW, result=None, expires_at=None)
    assert not backend.retry(missing, "t", now=NOW, run_at=NOW, error=ERROR)
    assert not backend.fail(missing, "t", now=NOW, error=ERROR, expires_at=None)
    assert not backend.release(missing, "t", now=NOW)
    assert backend.rescue(missing, "t", now=NOW, max_lost=3, error=ERROR) is None
    assert backend.counts() == {}


def test_a_finished_job_cannot_be_finished_again(backend: Backend) -> None:
    job = running(backend, max_attempts=5)
    assert job.lease is not None
    assert backend.complete(job.id, job.lease, now=NOW, result=b"1", expires_at=None)
    assert not backend.complete(job.id, job.lease, now=NOW, result=b"2", expires_at=None)
    assert not backend.fail(job.id, job.lease, now=NOW, error=ERROR, expires_at=None)
    assert not backend.retry(job.id, job.lease, now=NOW, run_at=NOW, error=ERROR)
    assert not backend.release(job.id, job.lease, now=NOW)
    got = must_get(backend, job.id)
    assert got.state is JobState.SUCCEEDED and got.result == b"1"


def test_a_stale_worker_cannot_finish_a_reclaimed_job(backend: Backend) -> None:
    first = running(backend, max_attempts=5)
    assert first.lease is not None
    rescued = backend.rescue_expired(now=NOW + LEASE + 1, max_lost=5, error=LOST_ERROR)
    assert [j.id for j in rescued] == [first.id]
    second = claim_one(backend, now=NOW + LEASE + 1)
    assert second.id == first.id and second.lease != first.lease
    assert not backend.complete(first.id, first.lease, now=NOW + 40, result=b"old", expires_at=None)
    assert backend.extend_leases({first.id: first.lease}, now=NOW + 40, lease=LEASE) == {
        first.id: LeaseState.LOST
    }
    assert second.lease is not None
    assert backend.complete(second.id, second.lease, now=NOW + 41, result=b"new", expires_at=None)
    assert must_get(backend, first.id).result == b"new"


def test_retry_counts_the_attempt(backend: Backend) -> None:
    job = running(backend, max_attempts=3)
    assert job.lease is not None
    assert backend.retry(job.id, job.lease, now=NOW + 1, run_at=NOW + 60, error=ERROR)
    got = must_get(backend, job.id)
    assert got.state is JobState.PENDING
    assert got.run_at == NOW + 60
    assert got.error == ERROR
    assert got.attempt == 1
    assert got.lease is None and got.lease_expires_at is None and got.worker_id is None
    assert backend.claim(["default"], worker_id=WORKER, now=NOW + 59, lease=LEASE) == []
    again = claim_one(backend, now=NOW + 60)
    assert again.attempt == 2
    assert again.error == ERROR  # the last error stays visible while it runs again


def test_retry_without_counting_gives_the_attempt_back(backend: Backend) -> None:
    job = running(backend, max_attempts=3)
    assert job.lease is not None
    assert backend.retry(job.id, job.lease, now=NOW, run_at=NOW + 5, error=ERROR, count=False)
    got = must_get(backend, job.id)
    assert got.state is JobState.PENDING
    assert got.attempt == 0
    assert got.run_at == NOW + 5
    assert claim_one(backend, now=NOW + 5).attempt == 1


def test_fail(backend: Backend) -> None:
    job = running(backend, max_attempts=3)
    assert job.lease is not None
    assert backend.fail(job.id, job.lease, now=NOW + 2, error=ERROR, expires_at=NOW + 86400)
    got = must_get(backend, job.id)
    assert got.state is JobState.FAILED
    assert got.error == ERROR
    assert got.finished_at == NOW + 2
    assert got.expires_at == NOW + 86400
    assert got.attempt == 1
    assert got.lease is None and got.lease_expires_at is None
    assert backend.claim(["default"], worker_id=WORKER, now=NOW + 1e6, lease=LEASE) == []


def test_release_gives_the_attempt_back_and_is_due_now(backend: Backend) -> None:
    job = put(backend, run_at=NOW - 100, max_attempts=2)
    claimed = claim_one(backend, now=NOW)
    assert claimed.lease is not None
    assert backend.release(job.id, claimed.lease, now=NOW + 7)
    got = must_get(backend, job.id)
    assert got.state is JobState.PENDING
    assert got.attempt == 0
    assert got.run_at == NOW - 100  # kept: due now, and ahead of younger jobs
    assert got.lease is None and got.lease_expires_at is None and got.worker_id is None
    again = claim_one(backend, now=NOW + 7)
    assert again.attempt == 1
    assert again.lease != claimed.lease


# -- rescue ----------------------------------------------------------------------


def test_rescue_puts_the_job_back_when_attempts_are_left(backend: Backend) -> None:
    job = running(backend, max_attempts=3)
    assert job.lease is not None
    got = backend.rescue(job.id, job.lease, now=NOW + 50, max_lost=3, error=LOST_ERROR)
    assert got is not None
    assert got.state is JobState.PENDING
    assert got.lost == 1
    assert got.attempt == 1  # the lost attempt counts
    assert got.run_at == job.run_at  # kept: due now, and ahead of younger jobs
    assert got.error == LOST_ERROR
    assert got.lease is None and got.lease_expires_at is None
    assert_same_record(must_get(backend, job.id), got)
    assert claim_one(backend, now=NOW + 50).attempt == 2


def test_rescue_fails_the_job_when_attempts_are_exhausted(backend: Backend) -> None:
    job = running(backend, max_attempts=1)
    assert job.lease is not None
    got = backend.rescue(job.id, job.lease, now=NOW + 50, max_lost=10, error=LOST_ERROR)
    assert got is not None
    assert got.state is JobState.FAILED
    assert got.lost == 1
    assert got.error == LOST_ERROR
    assert got.finished_at == NOW + 50
    assert got.lease is None and got.lease_expires_at is None
    assert_same_record(must_get(backend, job.id), got)


def test_rescue_fails_the_job_when_losses_reach_max_lost(backend: Backend) -> None:
    job = put(backend, max_attempts=10)
    for round_ in range(1, 4):
        claimed = claim_one(backend, now=NOW + round_)
        assert claimed.lease is not None
        got = backend.rescue(job.id, claimed.lease, now=NOW + round_, max_lost=3, error=LOST_ERROR)
        assert got is not None
        assert got.lost == round_
        expected = JobState.FAILED if round_ == 3 else JobState.PENDING
        assert got.state is expected
    assert must_get(backend, job.id).attempt == 3


def test_rescue_twice_with_the_same_token(backend: Backend) -> None:
    job = running(backend, max_attempts=5)
    assert job.lease is not None
    assert backend.rescue(job.id, job.lease, now=NOW, max_lost=5, error=LOST_ERROR) is not None
    assert backend.rescue(job.id, job.lease, now=NOW, max_lost=5, error=LOST_ERROR) is None
    assert must_get(backend, job.id).lost == 1


def test_rescue_expired_touches_only_expired_leases(backend: Backend) -> None:
    expired = put(backend, max_attempts=3)
    claim_one(backend, now=NOW)  # lease until NOW + 30
    fresh = put(backend, max_attempts=3)
    claim_one(backend, now=NOW + 20)  # lease until NOW + 50
    boundary = put(backend, max_attempts=3)
    claim_one(backend, now=NOW + 10)  # lease until NOW + 40
    exhausted = put(backend, max_attempts=1)
    claim_one(backend, now=NOW + 1)  # lease until NOW + 31
    pending = put(backend, run_at=NOW - 1000)

    # NOW + 40: expired and exhausted leases ran out before now; boundary's ends now
    got = backend.rescue_expired(now=NOW + 40, max_lost=5, error=LOST_ERROR)
    assert sorted(j.id for j in got) == sorted([expired.id, exhausted.id])
    by_id = {j.id: j for j in got}
    assert by_id[expired.id].state is JobState.PENDING
    assert by_id[exhausted.id].state is JobState.FAILED
    for j in got:
        assert_same_record(must_get(backend, j.id), j)
    assert must_get(backend, fresh.id).state is JobState.RUNNING
    assert must_get(backend, boundary.id).state is JobState.RUNNING
    assert must_get(backend, pending.id).state is JobState.PENDING
    assert must_get(backend, pending.id).lost == 0
    assert backend.rescue_expired(now=NOW + 40, max_lost=5, error=LOST_ERROR) == []


def test_rescue_expired_follows_extended_leases(backend: Backend) -> None:
    job = running(backend, max_attempts=3)
    assert job.lease is not None
    backend.extend_leases({job.id: job.lease}, now=NOW + 25, lease=LEASE)
    assert backend.rescue_expired(now=NOW + 40, max_lost=3, error=LOST_ERROR) == []
    got = backend.rescue_expired(now=NOW + 56, max_lost=3, error=LOST_ERROR)
    assert [j.id for j in got] == [job.id]


# -- next_due --------------------------------------------------------------------


def test_next_due(backend: Backend) -> None:
    assert backend.next_due(["default"], now=NOW) is None
    put(backend, run_at=NOW + 30)
    put(backend, run_at=NOW + 10)
    put(backend, queue="other", run_at=NOW + 1)
    assert backend.next_due(["default"], now=NOW) == NOW + 10
    assert backend.next_due(["default", "other"], now=NOW) == NOW + 1
    assert backend.next_due(["nothing"], now=NOW) is None
    put(backend, run_at=NOW - 5)
    assert backend.next_due(["default"], now=NOW) == NOW - 5  # already due


def test_next_due_ignores_jobs_that_are_not_pending(backend: Backend) -> None:
    job = running(backend, run_at=NOW - 5)
    put(backend, run_at=NOW + 100)
    assert backend.next_due(["default"], now=NOW) == NOW + 100
    assert job.lease is not None
    backend.retry(job.id, job.lease, now=NOW, run_at=NOW + 50, error=ERROR)
    assert backend.next_due(["default"], now=NOW) == NOW + 50


# -- wait ------------------------------------------------------------------------


def test_wait_returns_by_timeout(backend: Backend) -> None:
    started = time.monotonic()
    backend.wait(["default"], 0.05)
    assert time.monotonic() - started < 5.0


def test_wait_returns_early_on_enqueue(backend: Backend) -> None:
    returned = threading.Event()
    elapsed: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        backend.wait(["default"], 20.0)
        elapsed.append(time.monotonic() - started)
        returned.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    # A wake-up sent before the waiter blocks may be missed, so keep enqueueing
    # until it returns (or a deadline passes).
    deadline = time.monotonic() + 10.0
    while not returned.is_set() and time.monotonic() < deadline:
        backend.enqueue(make_job(), now=NOW)
        returned.wait(0.05)
    thread.join(timeout=25)
    assert returned.is_set()
    assert elapsed[0] < 10.0


# -- cancel ----------------------------------------------------------------------


def test_cancel_pending(backend: Backend) -> None:
    job = put(backend, run_at=NOW + 100)
    assert backend.cancel(job.id, now=NOW + 1) is CancelResult.CANCELLED
    got = must_get(backend, job.id)
    assert got.state is JobState.CANCELLED
    assert got.finished_at == NOW + 1
    assert backend.claim(["default"], worker_id=WORKER, now=NOW + 1000, lease=LEASE) == []
    assert backend.cancel(job.id, now=NOW + 2) is CancelResult.NOOP


def test_cancel_running_requests_an_abort(backend: Backend) -> None:
    job = running(backend)
    assert job.lease is not None
    assert backend.cancel(job.id, now=NOW) is CancelResult.ABORTING
    got = must_get(backend, job.id)
    assert got.state is JobState.RUNNING
    assert got.abort_requested is True
    assert got.lease == job.lease
    # the worker still owns the lease and records how the attempt ended
    assert backend.fail(job.id, job.lease, now=NOW, error=ERROR, expires_at=None)
    assert must_get(backend, job.id).state is JobState.FAILED


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_cancel_final_or_missing_is_a_noop(backend: Backend, final: str) -> None:
    job = running(backend)
    assert job.lease is not None
    if final == "succeeded":
        backend.complete(job.id, job.lease, now=NOW, result=None, expires_at=None)
    else:
        backend.fail(job.id, job.lease, now=NOW, error=ERROR, expires_at=None)
    before = must_get(backend, job.id)
    assert backend.cancel(job.id, now=NOW + 5) is CancelResult.NOOP
    assert_same_record(must_get(backend, job.id), before)
    assert backend.cancel(new_job_id(NOW), now=NOW) is CancelResult.NOOP


# -- requeue ---------------------------------------------------------------------


def _failed_job(backend: Backend, **fields: Any) -> Job:
    fields.setdefault("max_attempts", 2)
    job = put(backend, **fields)
    for i in range(job.max_attempts):
        claimed = claim_one(backend, now=NOW + i)
        assert claimed.lease is not None
        got = backend.rescue(claimed.id, claimed.lease, now=NOW + i, max_lost=10, error=LOST_ERROR)
        assert got is not None
    final = must_get(backend, job.id)
    assert final.state is JobState.FAILED
    assert final.attempt == job.max_attempts and final.lost == job.max_attempts
    return final


def test_requeue_failed_resets_attempts_and_losses(backend: Backend) -> None:
    job = _failed_job(backend)
    assert backend.requeue(job.id, now=NOW + 100)
    got = must_get(backend, job.id)
    assert got.state is JobState.PENDING
    assert got.attempt == 0
    assert got.lost == 0
    assert got.run_at == NOW + 100
    assert got.abort_requested is False
    again = claim_one(backend, now=NOW + 100)
    assert again.attempt == 1


def test_requeue_cancelled(backend: Backend) -> None:
    job = put(backend, run_at=NOW + 500)
    backend.cancel(job.id, now=NOW)
    assert backend.requeue(job.id, now=NOW + 1)
    got = must_get(backend, job.id)
    assert got.state is JobState.PENDING
    assert got.run_at == NOW + 1
    assert claim_one(backend, now=NOW + 1).id == job.id


def test_requeue_clears_a_requested_abort(backend: Backend) -> None:
    job = running(backend)
    assert job.lease is not None
    backend.cancel(job.id, now=NOW)
    backend.fail(job.id, job.lease, now=NOW, error=ERROR, expires_at=None)
    assert backend.requeue(job.id, now=NOW)
    claimed = claim_one(backend)
    assert claimed.abort_requested is False
    assert claimed.lease is not None
    assert backend.extend_leases({job.id: claimed.lease}, now=NOW, lease=LEASE) == {
        job.id: LeaseState.HELD
    }


def test_requeue_refuses_other_states(backend: Backend) -> None:
    pending = put(backend)
    assert not backend.requeue(pending.id, now=NOW)
    run = running(backend, queue="q2")
    assert not backend.requeue(run.id, now=NOW)
    done = running(backend, queue="q3")
    assert done.lease is not None
    backend.complete(done.id, done.lease, now=NOW, result=None, expires_at=None)
    assert not backend.requeue(done.id, now=NOW)
    assert not backend.requeue(new_job_id(NOW), now=NOW)
    assert must_get(backend, pending.id).state is JobState.PENDING
    assert must_get(backend, run.id).state is JobState.RUNNING
    assert must_get(backend, done.id).state is JobState.SUCCEEDED


def test_requeue_refuses_when_the_key_is_taken(backend: Backend) -> None:
    job = _failed_job(backend, key="k")
    other = put(backend, key="k")
    assert other.id != job.id
    assert not backend.requeue(job.id, now=NOW)
    assert must_get(backend, job.id).state is JobState.FAILED
    # once the other job is final, the key is free again
    assert backend.cancel(other.id, now=NOW) is CancelResult.CANCELLED
    assert backend.requeue(job.id, now=NOW)
    assert must_get(backend, job.id).state is JobState.PENDING
    # and the requeued job holds the key
    assert backend.enqueue(make_job(key="k"), now=NOW).id == job.id


# -- prune / purge -----------------------------------------------------------------


def _finish(backend: Backend, *, expires_at: float | None, queue: str = "default") -> Job:
    job = running(backend, queue=queue)
    assert job.lease is not None
    assert backend.complete(job.id, job.lease, now=NOW, result=None, expires_at=expires_at)
    return job


def test_prune_deletes_final_jobs_whose_expiry_passed(backend: Backend) -> None:
    old = _finish(backend, expires_at=NOW + 10)
    exact = _finish(backend, expires_at=NOW + 20)
    later = _finish(backend, expires_at=NOW + 21)
    forever = _finish(backend, expires_at=None)
    failed = running(backend)
    assert failed.lease is not None
    backend.fail(failed.id, failed.lease, now=NOW, error=ERROR, expires_at=NOW + 5)
    # a live job with an expiry is not pruned: only final jobs are
    live = put(backend, expires_at=NOW)
    assert backend.prune(now=NOW + 20) == 3
    assert backend.get(old.id) is None
    assert backend.get(exact.id) is None
    assert backend.get(failed.id) is None
    for kept in (later, forever, live):
        assert backend.get(kept.id) is not None
    assert backend.prune(now=NOW + 20) == 0


def test_prune_respects_limit(backend: Backend) -> None:
    jobs = [_finish(backend, expires_at=NOW) for _ in range(5)]
    assert backend.prune(now=NOW + 1, limit=2) == 2
    assert sum(backend.get(j.id) is not None for j in jobs) == 3
    assert backend.prune(now=NOW + 1, limit=2) == 2
    assert backend.prune(now=NOW + 1, limit=2) == 1
    assert backend.prune(now=NOW + 1, limit=2) == 0
    assert backend.counts() == {}


def test_purge_by_state(backend: Backend) -> None:
    done = _finish(backend, expires_at=None)
    failed = running(backend)
    assert failed.lease is not None
    backend.fail(failed.id, failed.lease, now=NOW, error=ERROR, expires_at=None)
    cancelled = put(backend)
    backend.cancel(cancelled.id, now=NOW)
    live = running(backend)
    pending = put(backend)
    assert backend.purge(states=["failed", "cancelled"]) == 2
    assert backend.get(failed.id) is None and backend.get(cancelled.id) is None
    assert backend.get(done.id) is not None
    # live states are never purged, even when asked for
    assert backend.purge(states=["pending", "running"]) == 0
    assert backend.get(pending.id) is not None and backend.get(live.id) is not None
    assert backend.purge(states=[s.value for s in FINAL_STATES]) == 1
    assert backend.get(done.id) is None


def test_purge_by_queue_and_finish_time(backend: Backend) -> None:
    a_old = running(backend, queue="a")
    a_new = running(backend, queue="a")
    b_old = running(backend, queue="b")
    for job, finished in ((a_old, NOW), (a_new, NOW + 100), (b_old, NOW)):
        assert job.lease is not None
        backend.complete(job.id, job.lease, now=finished, result=None, expires_at=None)
    assert backend.purge(states=["succeeded"], queue="a", before=NOW + 50) == 1
    assert backend.get(a_old.id) is None
    assert backend.get(a_new.id) is not None
    assert backend.get(b_old.id) is not None
    assert backend.purge(states=["succeeded"], before=NOW + 100) == 1  # before is exclusive
    assert backend.get(b_old.id) is None
    assert backend.purge(states=["succeeded"], queue="a") == 1
    assert backend.counts() == {}


# -- list_jobs / counts --------------------------------------------------------------


def test_list_jobs_newest_first_with_filters(backend: Backend) -> None:
    a1 = put(backend, queue="a", task="t.one")
    b1 = put(backend, queue="b", task="t.two")
    a2 = put(backend, queue="a", task="t.two")
    a3 = running(backend, queue="c", task="t.one")
    assert [j.id for j in backend.list_jobs()] == [a3.id, a2.id, b1.id, a1.id]
    assert [j.id for j in backend.list_jobs(queue="a")] == [a2.id, a1.id]
    assert [j.id for j in backend.list_jobs(task="t.one")] == [a3.id, a1.id]
    assert [j.id for j in backend.list_jobs(state="running")] == [a3.id]
    assert [j.id for j in backend.list_jobs(state="pending", queue="a", task="t.two")] == [a2.id]
    assert backend.list_jobs(state="failed") == []
    assert backend.list_jobs(queue="nope") == []
    listed = backend.list_jobs(state="running")[0]
    assert_same_record(listed, must_get(backend, a3.id))


def test_list_jobs_pages_with_a_cursor(backend: Backend) -> None:
    jobs = [put(backend, queue="ab"[i % 2]) for i in range(23)]
    newest_first = [j.id for j in reversed(jobs)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = backend.list_jobs(limit=5, cursor=cursor)
        if not page:
            break
        assert len(page) <= 5
        pages += 1
        seen.extend(j.id for j in page)
        cursor = page[-1].id
    assert pages == 5
    assert seen == newest_first
    # a cursor combines with a filter
    only_a = backend.list_jobs(queue="a", limit=3, cursor=newest_first[0])
    expected_a = [j.id for j in reversed(jobs) if j.queue == "a" and j.id < newest_first[0]]
    assert [j.id for j in only_a] == expected_a[:3]


def test_counts(backend: Backend) -> None:
    assert backend.counts() == {}
    put(backend, queue="a")
    put(backend, queue="a", run_at=NOW + 100)  # scheduled is stored as pending
    running(backend, queue="b")
    _finish(backend, expires_at=None, queue="b")
    cancelled = put(backend, queue="c")
    backend.cancel(cancelled.id, now=NOW)
    assert backend.counts() == {
        "a": {"pending": 2},
        "b": {"running": 1, "succeeded": 1},
        "c": {"cancelled": 1},
    }
    backend.purge(states=["cancelled"])
    assert "c" not in backend.counts()


# -- close -----------------------------------------------------------------------


def test_close_then_use_again(backend: Backend) -> None:
    job = put(backend)
    backend.close()
    assert must_get(backend, job.id).id == job.id
    backend.close()
    backend.close()  # closing twice is harmless
    assert backend.counts() == {"default": {"pending": 1}}


def test_backend_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.url, str) and backend.url
