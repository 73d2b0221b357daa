"""Contract: abort, per-task limits at claim time, and periodic ticks. Runs on every backend."""

from __future__ import annotations

import threading

from spoolhouse.backends.base import Backend, TaskLimit
from spoolhouse.job import Job, JobState, new_job_id

NOW = 1_700_000_000.0


def job(task: str = "t", *, queue: str = "default", priority: int = 0, run_at: float = NOW,
        key: str | None = None, seq: int = 0) -> Job:
    return Job(
        id=new_job_id(NOW + seq / 1000), task=task, queue=queue, payload=b"{}",
        priority=priority, run_at=run_at, max_attempts=3, created_at=NOW, key=key,
    )


def put_many(backend: Backend, tasks: list[str]) -> list[Job]:
    return backend.enqueue_many([job(t, seq=i) for i, t in enumerate(tasks)], now=NOW)


# -- abort ------------------------------------------------------------------------
def test_abort_moves_a_running_job_to_cancelled(backend: Backend) -> None:
    backend.enqueue(job(), now=NOW)
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease
    assert backend.abort(claimed.id, "stale", now=NOW, error="{}", expires_at=None) is False
    assert backend.abort(claimed.id, claimed.lease, now=NOW + 1, error='{"reason": "aborted"}',
                         expires_at=NOW + 50) is True
    stored = backend.get(claimed.id)
    assert stored is not None
    assert stored.state is JobState.CANCELLED
    assert stored.finished_at == NOW + 1 and stored.expires_at == NOW + 50
    assert stored.lease is None
    assert backend.complete(claimed.id, claimed.lease, now=NOW, result=None, expires_at=None) is False
    assert backend.counts() == {"default": {"cancelled": 1}}


# -- limits -----------------------------------------------------------------------
def test_concurrency_limit_skips_a_task_at_its_limit_and_claims_others(backend: Backend) -> None:
    put_many(backend, ["slow", "slow", "slow", "fast", "slow", "fast"])
    limits = {"slow": TaskLimit(concurrency=2)}
    first = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=10, limits=limits)
    assert sorted(j.task for j in first) == ["fast", "fast", "slow", "slow"]
    assert backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=10, limits=limits) == []
    done = next(j for j in first if j.task == "slow")
    assert done.lease
    assert backend.complete(done.id, done.lease, now=NOW, result=None, expires_at=None)
    again = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=10, limits=limits)
    assert [j.task for j in again] == ["slow"]


def test_limit_does_not_block_jobs_behind_it_in_priority_order(backend: Backend) -> None:
    backend.enqueue(job("limited", priority=9, seq=1), now=NOW)
    backend.enqueue(job("limited", priority=9, seq=2), now=NOW)
    backend.enqueue(job("other", priority=0, seq=3), now=NOW)
    limits = {"limited": TaskLimit(concurrency=1)}
    a = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limits=limits)
    b = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limits=limits)
    assert [j.task for j in a] == ["limited"]
    assert [j.task for j in b] == ["other"]


def test_rate_limit_counts_starts_within_the_window(backend: Backend) -> None:
    put_many(backend, ["r"] * 5)
    limits = {"r": TaskLimit(rate=2, per=60)}
    got = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=5, limits=limits)
    assert len(got) == 2
    for j in got:
        assert j.lease and backend.complete(j.id, j.lease, now=NOW, result=None, expires_at=None)
    assert backend.claim(["default"], worker_id="w", now=NOW + 59, lease=30, limit=5, limits=limits) == []
    later = backend.claim(["default"], worker_id="w", now=NOW + 61, lease=30, limit=5, limits=limits)
    assert len(later) == 2


def test_limits_hold_under_concurrent_claims(backend: Backend) -> None:
    put_many(backend, ["c"] * 40)
    limits = {"c": TaskLimit(concurrency=3)}
    claimed: list[Job] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(5):
            got = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=2, limits=limits)
            with lock:
                claimed.extend(got)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 3
    assert backend.counts()["default"] == {"running": 3, "pending": 37}


def test_limits_of_other_tasks_change_nothing(backend: Backend) -> None:
    put_many(backend, ["a", "a", "a"])
    got = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=5,
                        limits={"b": TaskLimit(concurrency=0)})
    assert len(got) == 3


# -- periodic ticks ---------------------------------------------------------------
def test_schedule_tick_enqueues_once_per_tick(backend: Backend) -> None:
    first = backend.schedule_tick("every-min", NOW, job("p", seq=1), now=NOW)
    assert first is not None and first.state is JobState.PENDING
    assert backend.schedule_tick("every-min", NOW, job("p", seq=2), now=NOW + 1) is None
    assert backend.schedule_tick("every-min", NOW - 60, job("p", seq=3), now=NOW + 1) is None
    nxt = backend.schedule_tick("every-min", NOW + 60, job("p", seq=4), now=NOW + 60)
    assert nxt is not None and nxt.id != first.id
    assert backend.schedule_ticks() == {"every-min": NOW + 60}
    assert backend.counts() == {"default": {"pending": 2}}


def test_schedule_tick_recovers_when_the_clock_was_set_back(backend: Backend) -> None:
    assert backend.schedule_tick("s", NOW + 3600, job("p", seq=1), now=NOW + 3600)
    # the wall clock went back an hour: the recorded tick is in the future
    back = backend.schedule_tick("s", NOW, job("p", seq=2), now=NOW + 5)
    assert back is not None
    assert backend.schedule_tick("s", NOW, job("p", seq=3), now=NOW + 6) is None
    assert backend.schedule_ticks()["s"] == NOW


def test_schedules_are_independent(backend: Backend) -> None:
    assert backend.schedule_tick("a", NOW, job("p", seq=1), now=NOW)
    assert backend.schedule_tick("b", NOW, job("q", seq=2), now=NOW)
    assert backend.schedule_ticks() == {"a": NOW, "b": NOW}


def test_exactly_one_of_many_racing_schedulers_enqueues_a_tick(backend: Backend) -> None:
    results: list[Job | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def tick(i: int) -> None:
        barrier.wait()
        stored = backend.schedule_tick("race", NOW, job("p", seq=i), now=NOW)
        with lock:
            results.append(stored)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r is not None) == 1
    assert backend.counts() == {"default": {"pending": 1}}


def test_schedule_tick_respects_the_unique_key(backend: Backend) -> None:
    live = backend.enqueue(job("p", key="periodic:p", seq=1), now=NOW)
    stored = backend.schedule_tick("p", NOW, job("p", key="periodic:p", seq=2), now=NOW)
    assert stored is not None and stored.id == live.id  # tick recorded, no second job
    assert backend.counts() == {"default": {"pending": 1}}


# -- gaps closed after the first backends landed ------------------------------------
def test_enqueueing_a_stored_id_again_changes_nothing(backend: Backend) -> None:
    original = job("t", seq=1)
    backend.enqueue(original, now=NOW)
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    again = backend.enqueue(original.replace(queue="other", priority=5), now=NOW + 1)
    assert again.id == original.id and again.state is JobState.RUNNING
    assert backend.enqueue_many([original], now=NOW + 1)[0].state is JobState.RUNNING
    assert backend.counts() == {"default": {"running": 1}}


def test_a_rescue_that_fails_the_job_sets_its_expiry(backend: Backend) -> None:
    single = Job(id=new_job_id(NOW), task="t", queue="default", payload=b"{}", run_at=NOW,
                 max_attempts=1, created_at=NOW)
    backend.enqueue(single, now=NOW)
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease
    failed = backend.rescue(claimed.id, claimed.lease, now=NOW + 1, max_lost=3, error="{}",
                            expires_at=NOW + 500)
    assert failed is not None and failed.state is JobState.FAILED and failed.expires_at == NOW + 500
    other = Job(id=new_job_id(NOW + 1), task="t", queue="default", payload=b"{}", run_at=NOW,
                max_attempts=1, created_at=NOW)
    backend.enqueue(other, now=NOW)
    backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    (expired,) = backend.rescue_expired(now=NOW + 60, max_lost=3, error="{}", expires_at=NOW + 700)
    assert expired.state is JobState.FAILED and expired.expires_at == NOW + 700
    assert backend.prune(now=NOW + 600) == 1
    assert backend.prune(now=NOW + 800) == 1


def test_rescued_and_released_jobs_keep_their_place_in_the_queue(backend: Backend) -> None:
    old = job("t", seq=1, run_at=NOW)
    backend.enqueue(old, now=NOW)
    younger = [job("t", seq=10 + i, run_at=NOW + 1 + i) for i in range(3)]
    for j in younger:
        backend.enqueue(j, now=NOW + 5)
    (held,) = backend.claim(["default"], worker_id="w", now=NOW + 5, lease=30)
    assert held.id == old.id and held.lease
    assert backend.release(held.id, held.lease, now=NOW + 6)
    (again,) = backend.claim(["default"], worker_id="w", now=NOW + 7, lease=30)
    assert again.id == old.id and again.lease
    assert backend.rescue(again.id, again.lease, now=NOW + 8, max_lost=5, error="{}") is not None
    (third,) = backend.claim(["default"], worker_id="w", now=NOW + 9, lease=30)
    assert third.id == old.id
    (rescued,) = backend.rescue_expired(now=NOW + 100, max_lost=5, error="{}")
    assert rescued.run_at == NOW
    (fourth,) = backend.claim(["default"], worker_id="w", now=NOW + 101, lease=30)
    assert fourth.id == old.id


# -- dashboard support ----------------------------------------------------------------
def test_stats_count_outcomes_per_minute(backend: Backend) -> None:
    minute = 60 * 28_333_334  # the first minute boundary after NOW
    jobs = [job("s", seq=i) for i in range(6)]
    backend.enqueue_many(jobs, now=NOW)
    claimed = backend.claim(["default"], worker_id="w", now=minute + 1, lease=30, limit=6)
    assert len(claimed) == 6
    a, b, c, d, e, f = claimed
    assert a.lease and b.lease and c.lease and d.lease and e.lease and f.lease
    backend.complete(a.id, a.lease, now=minute + 5, result=None, expires_at=None)
    backend.complete(b.id, b.lease, now=minute + 59, result=None, expires_at=None)
    backend.fail(c.id, c.lease, now=minute + 61, error="{}", expires_at=None)
    backend.retry(d.id, d.lease, now=minute + 62, run_at=minute + 100, error="{}")
    backend.complete(e.id, "stale-token", now=minute + 62, result=None, expires_at=None)
    backend.abort(f.id, f.lease, now=minute + 63, error="{}", expires_at=None)
    single = Job(id=new_job_id(NOW + 9), task="s", queue="solo", payload=b"{}", run_at=NOW,
                 max_attempts=1, created_at=NOW)
    backend.enqueue(single, now=NOW)
    (g,) = backend.claim(["solo"], worker_id="w", now=minute + 120, lease=30)
    assert g.lease
    backend.rescue(g.id, g.lease, now=minute + 125, max_lost=3, error="{}")
    assert backend.stats(since=minute) == [
        (float(minute), 2, 0, 0),
        (float(minute + 60), 0, 1, 1),
        (float(minute + 120), 0, 1, 0),
    ]
    assert backend.stats(since=minute + 60) == [(float(minute + 60), 0, 1, 1), (float(minute + 120), 0, 1, 0)]
    assert backend.stats(since=minute + 180) == []


def test_list_jobs_by_key(backend: Backend) -> None:
    keyed = backend.enqueue(job("k", key="order:7", seq=1), now=NOW)
    backend.enqueue(job("k", key="order:8", seq=2), now=NOW)
    backend.enqueue(job("k", seq=3), now=NOW)
    assert [j.id for j in backend.list_jobs(key="order:7")] == [keyed.id]
    assert backend.list_jobs(key="order:9") == []


def test_headers_round_trip_through_every_transition(backend: Backend) -> None:
    headers = '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    stored = backend.enqueue(job("h", seq=1).replace(headers=headers), now=NOW)
    assert stored.headers == headers
    (claimed,) = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.headers == headers and claimed.lease
    backend.complete(claimed.id, claimed.lease, now=NOW, result=None, expires_at=None)
    final = backend.get(claimed.id)
    assert final is not None and final.headers == headers
    plain = backend.enqueue(job("h", seq=2), now=NOW)
    got = backend.get(plain.id)
    assert got is not None and got.headers is None


def test_delete_removes_only_final_jobs(backend: Backend) -> None:
    done, failing, waiting, busy = (job("d", seq=i) for i in range(4))
    backend.enqueue_many([done, failing, waiting, busy], now=NOW)
    claimed = {j.id: j for j in backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=3)}
    a, b = claimed[done.id], claimed[failing.id]
    assert a.lease and b.lease
    backend.complete(a.id, a.lease, now=NOW, result=None, expires_at=None)
    backend.fail(b.id, b.lease, now=NOW, error="{}", expires_at=None)
    assert backend.delete([done.id, failing.id, waiting.id, busy.id, "missing", done.id]) == 2
    assert backend.get(done.id) is None and backend.get(failing.id) is None
    assert backend.get(waiting.id) is not None and backend.get(busy.id) is not None
    assert backend.delete([]) == 0


def test_complete_many_acknowledges_a_batch_with_fencing(backend: Backend) -> None:
    jobs = [job("b", seq=i) for i in range(4)]
    backend.enqueue_many(jobs, now=NOW)
    claimed = backend.claim(["default"], worker_id="w", now=NOW, lease=30, limit=4)
    assert len(claimed) == 4 and all(j.lease for j in claimed)
    items = [(j.id, j.lease or "", f"r{i}".encode(), NOW + 100) for i, j in enumerate(claimed)]
    items[2] = (claimed[2].id, "stale", None, None)
    done = backend.complete_many(items, now=NOW + 1)
    assert done == [True, True, False, True]
    for i, j in enumerate(claimed):
        stored = backend.get(j.id)
        assert stored is not None
        if i == 2:
            assert stored.state is JobState.RUNNING
        else:
            assert stored.state is JobState.SUCCEEDED and stored.result == f"r{i}".encode()
            assert stored.finished_at == NOW + 1 and stored.expires_at == NOW + 100
    assert backend.complete_many([], now=NOW) == []
    assert backend.stats(since=NOW - 120)[-1][1] == 3
