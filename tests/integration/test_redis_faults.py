"""Redis faults against a private ``redis-server`` (R13, R14 of the reliability table).

R14: a Redis that is stopped, stalled or paused makes ``enqueue`` raise a typed
error within ``enqueue_timeout`` (2 s; p100 <= 2.5 s), stores nothing, and the
first enqueue after recovery succeeds within 1 s.

R13 (lite): with ``appendonly yes`` and ``appendfsync always`` every
acknowledged job survives a ``SHUTDOWN`` or a ``SIGKILL`` of the server, leases
are honoured after the restart, and the backend reconnects by itself.

Each test starts its own server on a free port and kills it by PID; a SIGALRM
watchdog bounds each test's time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_server import PrivateRedis
from spoolhouse.backends.redis import RedisBackend
from spoolhouse.errors import BackendUnavailable, EnqueueTimeout
from spoolhouse.job import Job, JobState, new_job_id

pytestmark = [pytest.mark.slow, pytest.mark.redis]

# The same rules as tests/conftest.py (importing it as ``conftest`` is ambiguous
# once a test folder has a conftest of its own).
REDIS_URL = os.environ.get("SPOOLHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

NOW = 1_700_000_000.0
TEST_BOUND = 90  # seconds; the watchdog fails a test that runs longer
ENQUEUE_TIMEOUT = 2.0
P100 = 2.5  # the most any failing enqueue may take
RECOVERY = 1.0  # the first enqueue after recovery succeeds within this


def make_job(**fields: Any) -> Job:
    fields.setdefault("task", "t")
    fields.setdefault("queue", "default")
    fields.setdefault("payload", b"[[], {}]")
    fields.setdefault("run_at", NOW)
    return Job(id=new_job_id(), **fields)


@pytest.fixture
def server(tmp_path: Path, bounded: None) -> Iterator[PrivateRedis]:
    """A private server with the durable settings (AOF, fsync on every write)."""
    s = PrivateRedis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    try:
        s.start()
        yield s
    finally:
        s.kill()


@pytest.fixture
def backend(server: PrivateRedis) -> Iterator[RedisBackend]:
    b = RedisBackend(server.url, prefix="faults", enqueue_timeout=ENQUEUE_TIMEOUT)
    try:
        yield b
    finally:
        b.close()


def failing_enqueue(b: RedisBackend) -> tuple[Job, float, BaseException | None]:
    """Try one enqueue; returns the job, the seconds it took, and the error it raised."""
    job = make_job()
    started = time.monotonic()
    try:
        b.enqueue(job, now=NOW)
    except BackendUnavailable as exc:
        return job, time.monotonic() - started, exc
    return job, time.monotonic() - started, None


def assert_recovers(b: RedisBackend) -> Job:
    """The first enqueue after recovery succeeds within RECOVERY seconds."""
    job = make_job()
    started = time.monotonic()
    stored = b.enqueue(job, now=NOW)
    assert time.monotonic() - started <= RECOVERY
    assert stored.id == job.id
    return job


def job_keys(server: PrivateRedis) -> set[bytes]:
    return set(server.client().scan_iter(match=b"{faults}:job:*", count=1000))


# -- R14 ----------------------------------------------------------------------------------


def test_enqueue_with_the_server_stopped(server: PrivateRedis, backend: RedisBackend) -> None:
    kept = backend.enqueue(make_job(), now=NOW)  # warm pools that the stop will break
    server.kill()
    tries = [failing_enqueue(backend) for _ in range(20)]
    for _, took, error in tries:
        assert isinstance(error, BackendUnavailable)
        assert took <= P100
    # a backend that never connected fails just as fast
    cold = RedisBackend(server.url, prefix="faults", enqueue_timeout=ENQUEUE_TIMEOUT)
    _, took, error = failing_enqueue(cold)
    assert isinstance(error, EnqueueTimeout) and took <= P100
    server.start()
    recovered = assert_recovers(backend)
    expected = {f"{{faults}}:job:{j.id}".encode() for j in (kept, recovered)}
    assert job_keys(server) == expected  # nothing of the failed tries was written
    assert backend.counts() == {"default": {"pending": 2}}


def test_enqueue_with_the_server_stalled(server: PrivateRedis, backend: RedisBackend) -> None:
    """SIGSTOP: connections are accepted by the kernel but nothing answers."""
    backend.enqueue(make_job(), now=NOW)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        tries = [failing_enqueue(backend) for _ in range(3)]
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    for _, took, error in tries:
        assert isinstance(error, EnqueueTimeout)
        assert ENQUEUE_TIMEOUT * 0.9 <= took <= P100
    assert_recovers(backend)
    # the server ran the timed-out scripts when it resumed: their deadline fence
    # made them store nothing, so no caller was told "failed" for a stored job
    for job, _, _ in tries:
        assert backend.get(job.id) is None
    assert backend.counts() == {"default": {"pending": 2}}


def test_enqueue_with_the_server_paused(server: PrivateRedis, backend: RedisBackend) -> None:
    backend.enqueue(make_job(), now=NOW)
    admin = server.client()
    admin.execute_command("CLIENT", "PAUSE", "30000", "WRITE")
    results: list[tuple[Job, float, BaseException | None]] = []
    lock = threading.Lock()

    def request() -> None:  # one web request that enqueues
        outcome = failing_enqueue(backend)
        with lock:
            results.append(outcome)

    try:
        threads = [threading.Thread(target=request) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads)
        # reads are not writes: inspection still answers during a WRITE pause
        assert backend.counts() == {"default": {"pending": 1}}
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    assert len(results) == 20
    for _, took, error in results:
        assert isinstance(error, EnqueueTimeout)
        assert took <= P100
    assert_recovers(backend)
    for job, _, _ in results:
        assert backend.get(job.id) is None
    assert backend.counts() == {"default": {"pending": 2}}


# -- R13 (lite) ----------------------------------------------------------------------------


def _wait_until_back(b: RedisBackend, timeout: float = 20.0) -> float:
    """Seconds until ``b`` answers again by itself (no reopen, no reconnect call)."""
    started = time.monotonic()
    while True:
        try:
            b.counts()
            return time.monotonic() - started
        except BackendUnavailable:
            assert time.monotonic() - started < timeout, "the backend did not reconnect"
            threading.Event().wait(0.01)


@pytest.mark.parametrize("stop", ["shutdown", "sigkill"])
def test_acknowledged_jobs_survive_a_restart(
    server: PrivateRedis, backend: RedisBackend, stop: str
) -> None:
    jobs = [backend.enqueue(make_job(), now=NOW) for _ in range(500)]
    later = backend.enqueue(make_job(run_at=NOW + 3600), now=NOW)
    leased = backend.claim(["default"], worker_id="w", now=NOW, lease=60, limit=10)
    assert len(leased) == 10
    if stop == "shutdown":
        server.shutdown()
    else:
        server.kill()  # SIGKILL: with appendfsync always every acknowledged write is on disk
    server.start()
    assert _wait_until_back(backend) < 5.0

    assert backend.counts() == {"default": {"pending": 491, "running": 10}}
    # leases are honoured: nothing is rescued before they expire
    assert backend.rescue_expired(now=NOW + 30, max_lost=3, error="{}") == []
    for job in leased:
        assert job.lease is not None
        assert backend.extend_leases({job.id: job.lease}, now=NOW + 30, lease=60) == {
            job.id: "held"
        }
    claimed = backend.claim(["default"], worker_id="w2", now=NOW, lease=60, limit=1000)
    assert len(claimed) == 490
    assert {j.id for j in claimed} | {j.id for j in leased} == {j.id for j in jobs}
    got = backend.get(later.id)
    assert got is not None and got.state is JobState.PENDING and got.run_at == NOW + 3600
    assert backend.claim(["default"], worker_id="w2", now=NOW + 3600, lease=60)[0].id == later.id
