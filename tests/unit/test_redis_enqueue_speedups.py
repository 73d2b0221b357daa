"""The Redis enqueue's fast paths store exactly what the general one stores.

``enqueue_batch.lua`` takes a keyless single ``enqueue`` and ``enqueue_batch``
(``spool_many``): each test runs the same jobs through it on one prefix and through
``enqueue_many`` (``enqueue.lua``, one field/value list per job) on another, and
compares every key the two left, value by value.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_redis_backend import NOW, REDIS_URL, require_redis

from spoolhouse.backends.redis import RedisBackend
from spoolhouse.backends.redis.keys import WAKE_MAX
from spoolhouse.errors import EnqueueTimeout
from spoolhouse.job import Job, JobBatch, JobState, new_job_ids


@pytest.fixture
def pair() -> Iterator[tuple[RedisBackend, RedisBackend]]:
    """Two backends on the shared Redis, each under a prefix of its own."""
    require_redis()
    run = uuid.uuid4().hex[:12]
    backends = (
        RedisBackend(REDIS_URL, prefix=f"shtest-fast-{run}"),
        RedisBackend(REDIS_URL, prefix=f"shtest-slow-{run}"),
    )
    try:
        yield backends
    finally:
        for b in backends:
            b.destroy()
            b.close()


def dump(b: RedisBackend) -> dict[str, Any]:
    """Every key of ``b``'s prefix (named without it) with its whole content."""
    client = b._current().main
    root = b.keys.root.encode()
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=b.keys.pattern, count=1000):
        kind = client.type(key)
        if kind == b"hash":
            value: Any = client.hgetall(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            value = sorted(client.smembers(key))
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        else:
            value = client.get(key)
        out[key.removeprefix(root).decode()] = (kind, value)
    return out


def template(**fields: Any) -> Job:
    fields.setdefault("task", "t")
    fields.setdefault("queue", "q")
    fields.setdefault("run_at", NOW)
    fields.setdefault("created_at", NOW)
    fields.setdefault("max_attempts", 4)
    fields.setdefault("result_ttl", 86400.0)
    return Job(id="", payload=b"", **fields)


def batch_of(base: Job, n: int, headers: str) -> JobBatch:
    ids = new_job_ids(n, NOW)
    payloads = [b'{"v":1,"a":[%d],"k":{}}' % i + b"x" * (i % 3) * 40 for i in range(n)]
    made: list[str | None] = {
        "none": [None] * n,
        "all": [f'{{"trace":"{i}"}}' for i in range(n)],
        "mixed": [None if i % 2 else f'{{"t":{i}}}' for i in range(n)],
    }[headers]
    return JobBatch(base, ids, payloads, made)


TEMPLATES = {
    "due": template(),
    "scheduled": template(run_at=NOW + 3600),
    "priority, timeout, no ttl": template(priority=-7, timeout=2.5, result_ttl=None),
    "odd fields": template(priority=3, attempt=2, lost=1, error="{}", max_attempts=1),
}


@pytest.mark.parametrize("headers", ["none", "all", "mixed"])
@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_a_batch_stores_what_enqueue_many_stores(
    pair: tuple[RedisBackend, RedisBackend], case: str, headers: str
) -> None:
    fast, slow = pair
    batch = batch_of(TEMPLATES[case], 25, headers)
    assert fast.enqueue_batch(batch, now=NOW) is None
    assert slow.enqueue_many(batch.jobs(), now=NOW) == batch.jobs()
    stored = dump(fast)
    assert stored == dump(slow)
    assert len([k for k in stored if k.startswith("job:")]) == 25
    assert [fast.get(i) for i in batch.ids] == batch.jobs()
    # retried: nothing changes, not even the wake-up list
    fast.enqueue_batch(batch, now=NOW + 1)
    assert dump(fast) == stored


@pytest.mark.parametrize("case", sorted(TEMPLATES))
def test_a_single_enqueue_stores_what_the_general_script_stores(
    pair: tuple[RedisBackend, RedisBackend], case: str
) -> None:
    fast, slow = pair
    for headers in ("none", "all"):
        [job] = batch_of(TEMPLATES[case], 1, headers).jobs()
        assert fast.enqueue(job, now=NOW) is job  # enqueue_batch.lua
        assert slow.enqueue_many([job], now=NOW) == [job]  # enqueue.lua
    stored = dump(fast)
    assert stored == dump(slow)
    # the same id again: nothing changes, the stored job is returned
    again = job.replace(payload=b"other", queue="elsewhere", run_at=NOW + 5)
    assert fast.enqueue(again, now=NOW) == job
    assert dump(fast) == stored


def test_a_retried_batch_stores_only_the_jobs_not_stored_yet(
    pair: tuple[RedisBackend, RedisBackend],
) -> None:
    fast, slow = pair
    batch = batch_of(template(), 10, "none")
    half = JobBatch(batch.template, batch.ids[::2], batch.payloads[::2], batch.headers[::2])
    fast.enqueue_batch(half, now=NOW)
    fast.enqueue_batch(batch, now=NOW)
    slow.enqueue_many(batch.jobs(), now=NOW)
    assert dump(fast) == dump(slow)
    assert fast.counts() == {"q": {"pending": 10}}


def test_a_large_batch_is_indexed_in_chunks(pair: tuple[RedisBackend, RedisBackend]) -> None:
    fast, _ = pair
    batch = batch_of(template(), 2500, "none")
    fast.enqueue_batch(batch, now=NOW)
    assert fast.counts() == {"q": {"pending": 2500}}
    client = fast._current().main
    assert client.zcard(fast.keys.ready("q")) == 2500
    assert client.llen(fast.keys.wake("q")) == WAKE_MAX
    claimed = fast.claim(["q"], worker_id="w", now=NOW, lease=30, limit=3000)
    assert [j.id for j in claimed] == list(batch.ids)


def test_a_batch_run_after_its_deadline_stores_nothing(
    pair: tuple[RedisBackend, RedisBackend],
) -> None:
    fast, _ = pair
    batch = batch_of(template(), 3, "none")
    [single] = batch_of(template(), 1, "none").jobs()
    fast.enqueue_batch(batch_of(template(), 1, "none"), now=NOW)  # measures the clock offset
    before = dump(fast)
    fast._offset = -10.0  # as if the server's clock were 10 s behind: the deadline has passed
    fast._offset_at = time.monotonic()
    with pytest.raises(EnqueueTimeout, match="nothing was stored"):
        fast.enqueue_batch(batch, now=NOW)
    fast._offset = -10.0
    with pytest.raises(EnqueueTimeout, match="nothing was stored"):
        fast.enqueue(single, now=NOW)
    assert dump(fast) == before
    fast.enqueue_batch(batch, now=NOW)  # the offset is measured again
    assert fast.counts() == {"q": {"pending": 4}}


def test_what_the_fast_path_does_not_take(pair: tuple[RedisBackend, RedisBackend]) -> None:
    fast, slow = pair
    keyed = batch_of(template(key="k"), 2, "none")
    with pytest.raises(ValueError, match="unique key"):
        fast.enqueue_batch(keyed, now=NOW)
    fast.enqueue_batch(batch_of(template(), 0, "none"), now=NOW)
    assert dump(fast) == {}
    # a keyed single job and a batch of jobs not pending go to enqueue.lua
    [first, second] = keyed.jobs()
    assert fast.enqueue(first, now=NOW) is first
    assert fast.enqueue(second, now=NOW) == first  # the key is held
    odd = batch_of(template(state=JobState.CANCELLED, expires_at=NOW + 60), 3, "mixed")
    fast.enqueue_batch(odd, now=NOW)
    slow.enqueue_many(keyed.jobs(), now=NOW)
    slow.enqueue_many(odd.jobs(), now=NOW)
    assert dump(fast) == dump(slow)
