"""The claim sent ahead by wait(): behind the BLPOP, handed to the claim that follows."""

from __future__ import annotations

import threading
import time

import pytest
from test_redis_backend import make_job, rb  # noqa: F401 (the fixture)

from spoolhouse.backends.redis import RedisBackend
from spoolhouse.backends.redis import backend as backend_module
from spoolhouse.job import Job, JobState


@pytest.fixture
def store(rb: RedisBackend) -> RedisBackend:  # noqa: F811 (the fixture imported above)
    return rb


def _spool_soon(store: RedisBackend, delay: float = 0.05, **fields: object) -> threading.Thread:
    producer = RedisBackend(store.url, prefix=store.prefix)

    def spool() -> None:
        time.sleep(delay)
        now = time.time()
        producer.enqueue(make_job(run_at=now, **fields), now=now)
        producer.close()

    thread = threading.Thread(target=spool)
    thread.start()
    return thread


def _claimed_ahead(store: RedisBackend) -> list[Job]:
    """An empty claim, a wait woken by an enqueue: the jobs that wait claimed ahead."""
    assert store.claim(["default"], worker_id="w", now=time.time(), lease=30) == []
    thread = _spool_soon(store)
    store.wait(["default"], 5)
    thread.join()
    assert store._ahead is not None
    return store._ahead[1]


def _scripts_run(store: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    real = store._run

    def run(name: str, args: object) -> object:
        names.append(name)
        return real(name, args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_run", run)
    return names


def test_a_woken_wait_has_claimed_for_the_next_claim(
    store: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.claim(["default"], worker_id="w", now=time.time(), lease=30) == []
    thread = _spool_soon(store)
    started = time.monotonic()
    store.wait(["default"], 5)
    assert time.monotonic() - started < 2
    thread.join()
    runs = _scripts_run(store, monkeypatch)
    [job] = store.claim(["default"], worker_id="w", now=time.time(), lease=30, limit=4)
    assert runs == []  # handed over, no round trip
    assert job.state is JobState.RUNNING and job.attempt == 1 and job.worker_id == "w"
    assert job.started_at is not None and job.lease_expires_at == job.started_at + 30
    assert job.run_at <= job.started_at
    stored = store.get(job.id)
    assert stored is not None and stored.lease == job.lease
    assert store.complete(job.id, job.lease or "", now=time.time(), result=None, expires_at=None)


def test_a_claim_for_something_else_gives_the_jobs_back(store: RedisBackend) -> None:
    _claimed_ahead(store)
    # another worker id: the jobs claimed ahead go back, attempt and all, and this claim
    # takes them itself
    [job] = store.claim(["default"], worker_id="other", now=time.time(), lease=30)
    assert job.worker_id == "other" and job.attempt == 1
    assert store.counts() == {"default": {"running": 1}}


def test_a_claim_at_another_time_gives_the_jobs_back(store: RedisBackend) -> None:
    [ahead] = _claimed_ahead(store)
    far = time.time() - 3600  # a fake clock an hour behind: the job is not due for it
    assert store.claim(["default"], worker_id="w", now=far, lease=30) == []
    back = store.get(ahead.id)
    assert back is not None and back.state is JobState.PENDING and back.attempt == 0
    assert store.counts() == {"default": {"pending": 1}}


def test_close_gives_back_what_no_claim_took(store: RedisBackend) -> None:
    _claimed_ahead(store)
    store.close()
    assert store.counts() == {"default": {"pending": 1}}


def test_a_wait_that_times_out_claims_what_came_due(store: RedisBackend) -> None:
    now = time.time()
    store.enqueue(make_job(run_at=now + 0.2), now=now)
    assert store.claim(["default"], worker_id="w", now=time.time(), lease=30) == []
    store.wait(["default"], 0.1)  # the enqueue's token: at once, and nothing is due yet
    assert store._ahead is None
    store.wait(["default"], 0.5)  # no token: times out after the job came due
    assert store._ahead is not None
    [job] = store.claim(["default"], worker_id="w", now=time.time(), lease=30)
    assert job.state is JobState.RUNNING


def test_the_limits_of_the_claim_hold_for_the_claim_ahead(store: RedisBackend) -> None:
    limits = {"t": backend_module.TaskLimit(concurrency=1)}
    now = time.time()
    store.enqueue_many([make_job(run_at=now), make_job(run_at=now)], now=now)
    [first] = store.claim(["default"], worker_id="w", now=now, lease=30, limit=2, limits=limits)
    assert store.claim(["default"], worker_id="w", now=now, lease=30, limit=2, limits=limits) == []
    store.wait(["default"], 0.1)  # a token is left from the enqueue: returns at once
    assert store._ahead is None  # the limit held: nothing claimed ahead
    assert first.lease and store.complete(first.id, first.lease, now=now, result=None, expires_at=None)
    again = store.claim(["default"], worker_id="w", now=time.time(), lease=30, limit=2, limits=limits)
    assert len(again) == 1


def test_a_worker_that_stops_gives_back_what_its_wait_claimed_ahead(
    store: RedisBackend,
) -> None:
    """Without it, those jobs would wait for their lease to expire and count as lost."""
    from spoolhouse import Spooler

    sp = Spooler(store.url, prefix=store.prefix)
    backend = sp.backend
    assert isinstance(backend, RedisBackend)
    try:
        (ahead,) = _claimed_ahead(backend)
        assert backend.get(ahead.id).state is JobState.RUNNING  # type: ignore[union-attr]
        worker = sp.worker()
        worker.stop()  # the loop ends at once, as after a stop signal
        worker.run()
        back = backend.get(ahead.id)
        assert back is not None and back.state is JobState.PENDING and back.lost == 0
        assert backend._ahead is None
        assert backend.release_ahead() == 0
    finally:
        sp.close()
