"""The Redis key layout of schema 2: the jobs:<state>:<queue> index, next_due without
the pending:<queue> sets, and the migration of a store written by schema 1."""

from __future__ import annotations

import pytest
from test_redis_backend import NOW, REDIS_URL, make_job, rb  # noqa: F401 (the fixture)

from spoolhouse.backends.redis import RedisBackend


@pytest.fixture
def store(rb: RedisBackend) -> RedisBackend:  # noqa: F811 (the fixture imported above)
    return rb


def _to_schema_1(store: RedisBackend) -> None:
    """Rewrite the indexes of ``store``'s store the way schema 1 kept them."""
    client = store._current().main
    root = store.keys.root
    for key in list(client.scan_iter(match=store.keys.pattern, count=1000)):
        name = key.decode()[len(root) :]
        if not name.startswith("jobs:"):
            continue
        state, _, queue = name[len("jobs:") :].partition(":")
        for raw in client.zrange(key, 0, -1):
            job_id = raw.decode()
            client.zadd(root + "ids", {job_id: 0})
            client.zadd(root + "state:" + state, {job_id: 0})
            client.zadd(root + "queue:" + queue, {job_id: 0})
            if state == "pending":
                run_at = float(client.hget(store.keys.job(job_id), "run_at"))
                client.zadd(root + "pending:" + queue, {job_id: run_at})
            client.hincrby(root + "counts", f"{state}:{queue}", 1)
        client.delete(key)
    client.delete(store.keys.queues)


def test_a_schema_1_store_is_migrated_on_first_use(store: RedisBackend) -> None:
    a = store.enqueue(make_job(queue="a"), now=NOW)
    b = store.enqueue(make_job(queue="b:c", run_at=NOW + 60), now=NOW)
    c = store.enqueue(make_job(queue="a"), now=NOW)
    [claimed] = store.claim(["a"], worker_id="w", now=NOW, lease=30)
    assert claimed.id == a.id and claimed.lease
    store.complete(a.id, claimed.lease, now=NOW, result=None, expires_at=None)
    d = store.enqueue(make_job(queue="a"), now=NOW)
    [running] = store.claim(["a"], worker_id="w", now=NOW, lease=30)
    assert running.id == c.id
    _to_schema_1(store)
    client = store._current().main
    root = store.keys.root
    assert client.zcard(root + "ids") == 4

    fresh = RedisBackend(REDIS_URL, prefix=store.prefix)
    try:
        assert [j.id for j in fresh.list_jobs()] == [d.id, c.id, b.id, a.id]
        legacy = [k for k in client.scan_iter(match=store.keys.pattern) if
                  k.decode()[len(root) :].split(":", 1)[0] in ("ids", "state", "queue", "pending")]
        assert legacy == []
        assert [j.id for j in fresh.list_jobs(state="pending")] == [d.id, b.id]
        assert [j.id for j in fresh.list_jobs(queue="a")] == [d.id, c.id, a.id]
        assert [j.id for j in fresh.list_jobs(state="succeeded", queue="a")] == [a.id]
        assert fresh.next_due(["b:c"], now=NOW) == NOW + 60
        assert fresh.counts() == {
            "a": {"pending": 1, "running": 1, "succeeded": 1},
            "b:c": {"pending": 1},
        }
        assert [j.id for j in fresh.claim(["a"], worker_id="w", now=NOW, lease=30)] == [d.id]
        assert [j.id for j in fresh.list_jobs(state="running")] == [d.id, c.id]
    finally:
        fresh.close()


def test_a_half_migrated_store_ends_right(store: RedisBackend) -> None:
    jobs = store.enqueue_many([make_job() for _ in range(5)], now=NOW)
    _to_schema_1(store)
    client = store._current().main
    # a schema 2 process works on the store before the migration: claim, then cancel
    store._migrated = True
    [claimed] = store.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert store.cancel(jobs[1].id, now=NOW) == "cancelled"
    script = store._scripts(store._current()).migrate
    assert int(store._evalsha(client, [], script, b"$1\r\n2\r\n", 1)) == 2  # a first batch
    store._migrated = False
    assert {j.id for j in store.list_jobs(state="pending")} == {j.id for j in jobs[2:]}
    assert [j.id for j in store.list_jobs(state="running")] == [claimed.id]
    assert [j.id for j in store.list_jobs(state="cancelled")] == [jobs[1].id]
    assert len(store.list_jobs()) == 5
    assert not client.exists(store.keys.root + "ids")


def test_next_due_is_the_earliest_run_at_over_priorities(store: RedisBackend) -> None:
    assert store.next_due(["default"], now=NOW) is None
    store.enqueue(make_job(run_at=NOW - 5, priority=0), now=NOW)
    store.enqueue(make_job(run_at=NOW - 7.25, priority=3), now=NOW)
    store.enqueue(make_job(run_at=NOW - 1, priority=3), now=NOW)
    store.enqueue(make_job(run_at=NOW - 9.5, priority=-2), now=NOW)
    store.enqueue(make_job(run_at=NOW + 30, queue="later"), now=NOW)
    assert store.next_due(["default"], now=NOW) == NOW - 9.5
    assert store.next_due(["later"], now=NOW) == NOW + 30
    assert store.next_due(["later", "default"], now=NOW) == NOW - 9.5
    claimed = store.claim(["default"], worker_id="w", now=NOW, lease=30, limit=3)
    assert [j.priority for j in claimed] == [3, 3, 0]
    assert store.next_due(["default"], now=NOW) == NOW - 9.5
    store.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert store.next_due(["default", "later"], now=NOW) == NOW + 30


def test_list_jobs_merges_states_and_queues_newest_first(store: RedisBackend) -> None:
    jobs = [store.enqueue(make_job(queue=f"q{i % 3}"), now=NOW) for i in range(60)]
    for job in store.claim(["q0", "q1"], worker_id="w", now=NOW, lease=30, limit=10):
        store.complete(job.id, job.lease or "", now=NOW, result=None, expires_at=None)
    newest = [j.id for j in reversed(jobs)]
    pages, cursor = [], None
    while page := store.list_jobs(limit=7, cursor=cursor):
        pages += [j.id for j in page]
        cursor = page[-1].id
    assert pages == newest
    assert [j.id for j in store.list_jobs(queue="q1", limit=100)] == [
        j.id for j in reversed(jobs) if j.queue == "q1"
    ]
    assert len(store.list_jobs(state="succeeded", limit=100)) == 10


def test_packed_fields_round_trip_and_old_hashes_still_decode() -> None:
    from spoolhouse.backends.redis.codec import decode_job, encode_job, pack

    job = make_job(timeout=2.5, headers='{"a;,": "\u00e9"}', payload=b"1;2,3\x00-:", created_at=NOW)
    flat = encode_job(job)
    assert flat[:2] == ["_d", pack(job)] and "payload" not in flat and "id" not in flat
    assert decode_job([v.encode() if isinstance(v, str) else v for v in flat]) == job
    bare = make_job(payload=b"")
    assert decode_job([v.encode() if isinstance(v, str) else v for v in encode_job(bare)]) == bare
    # a hash written before _d: every field on its own
    old = [
        b"id", job.id.encode(), b"task", b"t", b"queue", b"default", b"payload", job.payload,
        b"state", b"pending", b"priority", b"0", b"run_at", repr(NOW).encode(),
        b"attempt", b"0", b"max_attempts", b"1", b"timeout", b"2.5",
        b"created_at", repr(NOW).encode(), b"lost", b"0", b"abort_requested", b"0",
        b"headers", job.headers.encode() if job.headers else b"", b"_rk", b"x",
    ]
    assert decode_job(old) == job
