"""``enqueue_one.lua``, the keyless single enqueue, stores what the other scripts store.

The client works out what ``enqueue_batch.lua`` works out on the server (the due test
against ``now``, the ready score from the priority, ``_rk``): each test stores the same
jobs through ``enqueue`` on one prefix and through ``enqueue_many`` (``enqueue.lua``)
or ``enqueue_batch`` on another, and compares every key the two left.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from test_redis_backend import NOW
from test_redis_enqueue_speedups import batch_of, dump, pair, template

from spoolhouse.backends.redis import RedisBackend, scripts
from spoolhouse.backends.redis.codec import single_resp
from spoolhouse.backends.redis.keys import WAKE_MAX
from spoolhouse.job import Job, JobBatch

__all__ = ["pair"]  # the fixture, used by name

TINY = math.ulp(NOW)

CASES = {
    "due at now": template(),
    "due before now": template(run_at=NOW - 100.25),
    "one ulp after now": template(run_at=NOW + TINY),
    "one ulp before now": template(run_at=NOW - TINY),
    "scheduled": template(run_at=NOW + 3600),
    "priority": template(priority=7),
    "negative priority": template(priority=-3),
    "huge priority": template(priority=2**60 + 1),
    "scheduled with priority": template(priority=5, run_at=NOW + 60),
    "timeout, no ttl": template(timeout=2.5, result_ttl=None),
    "odd fields": template(priority=3, attempt=2, lost=1, error="{}", max_attempts=1),
    "int times": template(run_at=int(NOW), created_at=int(NOW)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_single_job_is_stored_as_enqueue_lua_and_enqueue_batch_store_it(
    pair: tuple[RedisBackend, RedisBackend], case: str
) -> None:
    fast, slow = pair
    jobs = batch_of(CASES[case], 4, "mixed").jobs()
    for job in jobs:
        assert fast.enqueue(job, now=NOW) is job  # enqueue_one.lua
    assert slow.enqueue_many(jobs[:2], now=NOW) == jobs[:2]  # enqueue.lua
    for job in jobs[2:]:  # enqueue_batch.lua
        slow.enqueue_batch(JobBatch(job, [job.id], [job.payload], [job.headers]), now=NOW)
    stored = dump(fast)
    assert stored == dump(slow)
    assert [fast.get(job.id) for job in jobs] == jobs
    # the same id again: nothing changes, the stored job comes back
    again = jobs[0].replace(payload=b"other", queue="elsewhere", run_at=NOW + 5, priority=9)
    assert fast.enqueue(again, now=NOW) == jobs[0]
    assert dump(fast) == stored


def test_the_wake_list_is_capped(pair: tuple[RedisBackend, RedisBackend]) -> None:
    fast, slow = pair
    jobs = batch_of(template(), WAKE_MAX + 5, "none").jobs()
    for job in jobs:
        fast.enqueue(job, now=NOW)
    slow.enqueue_many(jobs, now=NOW)
    assert fast._current().main.llen(fast.keys.wake("q")) == WAKE_MAX
    assert dump(fast) == dump(slow)
    claimed = fast.claim(["q"], worker_id="w", now=NOW, lease=30, limit=100)
    assert [j.id for j in claimed] == [j.id for j in jobs]


def test_the_ready_order_follows_priority_then_run_at(
    pair: tuple[RedisBackend, RedisBackend],
) -> None:
    fast, _ = pair
    jobs = [
        batch_of(template(priority=p, run_at=NOW - d), 1, "none").jobs()[0]
        for p, d in [(0, 1.0), (5, 0.0), (0, 2.0), (-1, 3.0), (5, 1.0)]
    ]
    for job in jobs:
        fast.enqueue(job, now=NOW)
    claimed = fast.claim(["q"], worker_id="w", now=NOW, lease=30, limit=10)
    assert [j.id for j in claimed] == [jobs[i].id for i in (4, 1, 2, 0, 3)]


def bad(job: Job, now: float = NOW) -> None:
    single_resp(job, now)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"payload": "text"}, TypeError),
        ({"task": 3}, TypeError),
        ({"queue": b"q"}, TypeError),
        ({"run_at": math.nan}, ValueError),
        ({"run_at": "soon"}, TypeError),
        ({"max_attempts": 2.0}, TypeError),
        ({"priority": 1.5}, TypeError),
        ({"priority": True}, TypeError),
        ({"headers": b"{}"}, TypeError),
        ({"timeout": "1"}, TypeError),
        ({"created_at": math.nan}, ValueError),
        ({"result_ttl": "1"}, TypeError),
    ],
)
def test_a_job_that_cannot_be_stored_fails_before_any_io(
    pair: tuple[RedisBackend, RedisBackend], change: dict[str, object], error: type[Exception]
) -> None:
    fast, _ = pair
    [job] = batch_of(template(), 1, "none").jobs()
    odd = job.replace(**change)
    with pytest.raises(error):
        bad(odd)
    with pytest.raises(error):
        fast.enqueue(odd, now=NOW)
    with pytest.raises(ValueError):
        fast.enqueue(job, now=math.nan)
    with pytest.raises(TypeError):
        fast.enqueue(job, now="now")  # type: ignore[arg-type]
    assert dump(fast) == {}


@pytest.mark.parametrize(
    ("seconds", "micros", "deadline", "late"),
    [
        ("1700000000", "123456", "1700000000123456", False),  # at the deadline
        ("1700000000", "123457", "1700000000123456", True),
        ("1700000000", "5", "1700000000000004", True),  # short microseconds, padded
        ("1700000000", "5", "1700000000000005", False),
        ("1700000000", "99999", "1700000000100000", False),
        ("1700000001", "0", "1700000000999999", True),
        ("999999999", "999999", "1000000000000000", False),  # shorter: earlier
        ("10000000000", "0", "9999999999999999", True),  # longer: later
    ],
)
def test_past_compares_the_padded_clock_with_the_deadline(
    pair: tuple[RedisBackend, RedisBackend], seconds: str, micros: str, deadline: str, late: bool
) -> None:
    fast, _ = pair
    lib = (Path(scripts.__file__).parent / "lua" / "_lib.lua").read_text()
    match = re.search(r"^local function past\(deadline\)\n.*?^end\n", lib, re.M | re.S)
    assert match is not None and "redis.call('TIME')" in match.group(0)
    body = match.group(0).replace("redis.call('TIME')", "{ARGV[2], ARGV[3]}")
    script = body + "return past(ARGV[1]) and 1 or 0\n"
    client = fast._current().main
    assert client.eval(script, 0, deadline, seconds, micros) == int(late)
