"""The worker stepped with a fake clock: retries, dead letters, fencing, aborts, pruning."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from spoolhouse import FakeClock, Retry, Spooler, current_job
from spoolhouse.backends.base import LeaseState
from spoolhouse.job import Job, JobState, new_job_id
from spoolhouse.lifecycle import Complete, parse_error


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def sp(clock: FakeClock) -> Spooler:
    return Spooler("memory://", clock=clock)


def test_failing_task_retries_with_exponential_backoff_then_fails(sp: Spooler, clock: FakeClock) -> None:
    calls: list[float] = []

    @sp.task(name="flaky", retries=4, backoff=1.0, backoff_factor=2.0, jitter=0.0)
    def flaky() -> None:
        calls.append(clock.now())
        raise RuntimeError("nope")

    job = flaky.spool()
    worker = sp.worker()
    start = clock.now()
    for expected_gap in (1, 2, 4, 8):
        assert worker.run_once() is not None
        assert job.status() == "retrying"
        assert worker.run_once() is None  # not due yet
        clock.advance(expected_gap)
    assert worker.run_once() is not None
    assert job.status() == "failed"
    assert [c - start for c in calls] == [0, 1, 3, 7, 15]
    error = job.error
    assert error["reason"] == "error" and error["type"] == "RuntimeError"
    assert "raise RuntimeError" in error["traceback"]


def test_jitter_stays_within_its_band() -> None:
    from spoolhouse.retry import RetryPolicy

    policy = RetryPolicy(retries=5, base=10, factor=2, jitter=0.2)
    rng = random.Random(7)
    for n in range(1, 6):
        nominal = 10 * 2 ** (n - 1)
        for _ in range(200):
            assert 0.8 * nominal <= policy.delay(n, rng) <= 1.2 * nominal
    assert RetryPolicy(base=1, cap=30, jitter=0).delay(50, rng) == 30


def test_failed_job_can_be_requeued_and_runs_exactly_once_more(sp: Spooler) -> None:
    runs = []

    @sp.task(name="t", retries=0)
    def t() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise ValueError("first time")

    job = t.spool()
    sp.drain()
    assert job.status() == "failed"
    assert job.requeue() is True
    assert sp.drain() == 1
    assert job.status() == "succeeded" and len(runs) == 2


def test_not_retryable_errors_fail_at_once(sp: Spooler) -> None:
    @sp.task(name="t", retries=5, retry_on=(ConnectionError,))
    def t() -> None:
        raise ValueError("bad input")

    job = t.spool()
    sp.drain()
    assert job.status() == "failed" and job.info().attempt == 1


def test_retry_signal_uses_its_delay(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t", retries=2)
    def t() -> str:
        if current_job().attempt < 2:
            raise Retry(delay=30)
        return "ok"

    job = t.spool()
    sp.drain()
    info = job.info()
    assert job.status() == "retrying" and info.run_at == clock.now() + 30
    clock.advance(30)
    sp.drain()
    assert job.result(timeout=1) == "ok"


def test_retry_without_counting_gives_the_attempt_back(sp: Spooler, clock: FakeClock) -> None:
    seen = []

    @sp.task(name="t", retries=0)
    def t() -> str:
        seen.append(current_job().attempt)
        if len(seen) < 3:
            raise Retry(delay=1, count=False)
        return "done"

    job = t.spool()
    for _ in range(3):
        sp.drain()
        clock.advance(1)
    assert job.result(timeout=1) == "done"
    assert seen == [1, 1, 1]


def test_unknown_task_is_kept_for_a_later_deploy_then_failed(sp: Spooler, clock: FakeClock) -> None:
    sentinel = []
    job = Job(id=new_job_id(clock.now()), task="os.system", queue="default",
              payload=b'{"v":1,"a":["touch /tmp/pwned"],"k":{}}', max_attempts=1,
              created_at=clock.now(), run_at=clock.now())
    sp.backend.enqueue(job, now=clock.now())
    handle = sp.job(job.id)
    worker = sp.worker(["default"])
    worker.run_once()
    assert handle.status() == "scheduled"  # not dropped, not run; checked again later
    assert handle.info().attempt == 0
    assert handle.error["reason"] == "unknown_task"
    clock.advance(601)
    worker.run_once()
    assert handle.status() == "failed"
    assert handle.error["reason"] == "unknown_task"
    assert sentinel == []


def test_undecodable_payload_fails_at_once_and_keeps_the_payload(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    job = Job(id=new_job_id(clock.now()), task="t", queue="default", payload=b"\xff\xfe not json",
              max_attempts=4, created_at=clock.now(), run_at=clock.now())
    sp.backend.enqueue(job, now=clock.now())
    sp.drain()
    stored = sp.backend.get(job.id)
    assert stored is not None and stored.state == "failed"
    assert parse_error(stored.error)["reason"] == "decode_error"
    assert stored.payload == b"\xff\xfe not json" and stored.attempt == 1


def test_stale_worker_cannot_complete_a_rescued_job(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> int:
        return 1

    job = t.spool()
    (claimed,) = sp.backend.claim(["default"], worker_id="a", now=clock.now(), lease=30)
    clock.advance(31)
    rescued = sp.backend.rescue_expired(now=clock.now(), max_lost=3, error="{}")
    assert [j.id for j in rescued] == [job.id]
    (again,) = sp.backend.claim(["default"], worker_id="b", now=clock.now(), lease=30)
    assert again.attempt == 2 and again.lease != claimed.lease
    stale = sp.worker()
    assert stale.apply(claimed, Complete(result=None, expires_at=None)) is False
    assert job.status() == "running"
    assert stale.apply(again, Complete(result=None, expires_at=None)) is True
    assert job.status() == "succeeded"


def test_heartbeat_extends_leases_and_delivers_abort(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    job = t.spool()
    worker = sp.worker()
    (claimed,) = sp.backend.claim(["default"], worker_id=worker.worker_id, now=clock.now(), lease=30)
    from spoolhouse.context import RunningJob

    running = RunningJob(claimed)
    worker._held[claimed.id] = (claimed, running)
    clock.advance(20)
    worker.heartbeat()
    assert job.info().lease_expires_at == clock.now() + 30
    job.cancel()
    worker.heartbeat()
    assert running.should_abort()


def test_progress_is_recorded_and_cancel_aborts_at_the_next_report(sp: Spooler) -> None:
    steps = []

    @sp.task(name="t", retries=0)
    def t(n: int) -> None:
        for i in range(n):
            current_job().progress(i + 1, n, message="step")
            steps.append(i)
            if i == 1:
                handle.cancel()

    handle = t.spool(5)
    sp.drain()
    # the third report sees the cancellation and raises Abort
    assert steps == [0, 1]
    assert handle.status() == "cancelled" and handle.error["reason"] == "aborted"
    progress = handle.progress
    assert progress is not None and progress.current == 3 and progress.total == 5


def test_progress_on_a_lost_lease_reports_lost(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    t.spool()
    (claimed,) = sp.backend.claim(["default"], worker_id="w", now=clock.now(), lease=30)
    assert sp.backend.set_progress(claimed.id, "not-the-token", json.dumps({})) is LeaseState.LOST


def test_results_expire_and_are_pruned(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t", result_ttl=60)
    def t() -> int:
        return 1

    job = t.spool()
    sp.drain()
    assert sp.backend.prune(now=clock.now()) == 0
    clock.advance(61)
    assert sp.backend.prune(now=clock.now()) == 1
    with pytest.raises(LookupError):
        job.status()


def test_store_result_false_keeps_status_but_not_value(sp: Spooler) -> None:
    @sp.task(name="t", store_result=False)
    def t() -> int:
        return 42

    job = t.spool()
    sp.drain()
    assert job.status() == "succeeded" and job.result(timeout=1) is None


def test_unstorable_result_fails_the_job_with_a_fix(sp: Spooler) -> None:
    @sp.task(name="t")
    def t() -> object:
        return object()

    job = t.spool()
    sp.drain()
    assert job.status() == "failed"
    assert "store_result=False" in job.error["message"]


def test_queues_are_served_in_the_order_given_and_priority_within(sp: Spooler) -> None:
    order: list[str] = []

    @sp.task(name="t")
    def t(label: str) -> None:
        order.append(label)

    t.options(queue="low").spool("low-1")
    t.options(queue="high", priority=0).spool("high-p0")
    t.options(queue="high", priority=5).spool("high-p5")
    t.spool("default")
    sp.worker(["high", "default", "low"]).drain()
    assert order == ["high-p5", "high-p0", "default", "low-1"]


def test_middleware_wraps_every_execution_in_order(sp: Spooler) -> None:
    trace: list[str] = []

    def outer(job: object, call_next: object) -> object:
        trace.append("outer-in")
        result = call_next()  # type: ignore[operator]
        trace.append("outer-out")
        return result

    def inner(job: object, call_next: object) -> object:
        trace.append("inner-in")
        return call_next()  # type: ignore[operator]

    sp.add_middleware(outer)
    sp.add_middleware(inner)

    @sp.task(name="t")
    def t() -> None:
        trace.append("task")

    t.spool()
    sp.drain()
    assert trace == ["outer-in", "inner-in", "task", "outer-out"]


def test_current_job_outside_a_worker_says_so() -> None:
    from spoolhouse import SpoolhouseError

    with pytest.raises(SpoolhouseError, match="only available"):
        current_job()


def test_run_loop_burst_drains_with_threads(sp: Spooler) -> None:
    done = []

    @sp.task(name="t")
    def t(i: int) -> None:
        done.append(i)

    t.spool_many([(i,) for i in range(50)])
    worker = sp.worker(threads=4)
    worker.run(burst=True, shutdown_timeout=5)
    assert sorted(done) == list(range(50))
    assert sp.backend.counts()["default"] == {"succeeded": 50}


def test_max_tasks_stops_the_loop(sp: Spooler) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    t.spool_many([()] * 10)
    worker = sp.worker(max_tasks=3)
    worker.run(shutdown_timeout=5)
    assert worker.processed == 3
    assert sp.backend.counts()["default"] == {"succeeded": 3, "pending": 7}


def test_a_job_cancelled_while_running_that_raises_is_not_retried(sp: Spooler) -> None:
    @sp.task(name="t", retries=5)
    def t() -> None:
        handle.cancel()
        current_job().should_abort()  # the heartbeat would deliver it; here the test does
        raise RuntimeError("interrupted")

    handle = t.spool()
    worker = sp.worker()
    (claimed,) = sp.backend.claim(["default"], worker_id=worker.worker_id, now=sp.clock.now(), lease=30)
    from spoolhouse.context import RunningJob
    from spoolhouse.worker.executor import execute

    running = RunningJob(claimed)
    running.request_abort()
    outcome = execute(sp, claimed, running, now=sp.clock.now, rng=random.Random(1))
    assert worker.apply(claimed, outcome)
    assert handle.status() == "cancelled"
    assert handle.error["reason"] == "aborted" and handle.error["type"] == "RuntimeError"


def test_secret_arguments_never_reach_stored_errors_or_logs(
    sp: Spooler, caplog: pytest.LogCaptureFixture
) -> None:
    @sp.task(name="login", retries=0)
    def login(user: str, password: str, options: dict[str, str]) -> None:
        raise ValueError(f"cannot log in {user} with {password} ({options['api_key']})")

    job = login.spool("ann", "CANARY-7f3a", {"api_key": "CANARY-key-9"})
    with caplog.at_level("DEBUG", logger="spoolhouse"):
        sp.drain()
    error = job.error
    stored = error["message"] + error["traceback"]
    assert "ann" in error["message"]
    assert "CANARY" not in stored
    assert "CANARY" not in caplog.text


def test_every_claim_is_announced_before_its_start(tmp_path: object) -> None:
    sp = Spooler(f"sqlite:///{tmp_path}/order.db")

    @sp.task(name="t")
    def t(i: int) -> None: ...

    t.spool_many([(i,) for i in range(300)])
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_claim(jobs: list[Job]) -> None:
        with lock:
            events.extend(("claim", j.id) for j in jobs)

    def on_start(job: Job, previous: Job | None) -> None:
        with lock:
            events.append(("start", job.id))

    sp.worker(threads=4, on_claim=on_claim, on_start=on_start).run(burst=True, shutdown_timeout=5)
    claimed_at = {jid: i for i, (kind, jid) in enumerate(events) if kind == "claim"}
    started_at = {jid: i for i, (kind, jid) in enumerate(events) if kind == "start"}
    assert len(started_at) == 300
    assert all(claimed_at[jid] < at for jid, at in started_at.items())


def test_acks_are_recorded_promptly_while_the_worker_stays_busy(tmp_path: object) -> None:
    sp = Spooler(f"sqlite:///{tmp_path}/acks.db?synchronous=NORMAL")
    ended: dict[int, float] = {}

    @sp.task(name="t")
    def t(i: int) -> None:
        time.sleep(0.008)  # the workload: 8 ms jobs keep the worker busy
        ended[i] = time.time()

    handles = t.spool_many([(i,) for i in range(150)])
    sp.worker(threads=1).run(burst=True, shutdown_timeout=10)
    # finished_at is when the ack was stored; compare it with when the task returned
    delays = sorted((h.info().finished_at or 0) - ended[i] for i, h in enumerate(handles))
    assert delays[0] >= 0
    assert delays[len(delays) // 2] < 0.02, delays[-5:]
    assert delays[-1] < 0.1, delays[-5:]


def test_a_busy_worker_stores_its_acks_with_its_next_claim(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a backend with complete_and_claim, successes ride along with claims; a
    combined call that fails stores nothing, and those acks are stored later."""
    from spoolhouse.errors import BackendUnavailable

    sp = Spooler(f"sqlite:///{tmp_path}/ride.db?synchronous=OFF")

    @sp.task(name="t")
    def t(i: int) -> None: ...

    handles = t.spool_many([(i,) for i in range(3000)])
    real = sp.backend.complete_and_claim  # type: ignore[attr-defined]
    rode: list[int] = []
    failed: list[int] = []

    def combined(acks: list[tuple[str, str, bytes | None, float | None]], *args: object,
                 **kwargs: object) -> object:
        if acks and not failed:
            failed.append(len(acks))  # the first combined call with acks fails whole
            raise BackendUnavailable("store unavailable (test)")
        rode.append(len(acks))
        return real(acks, *args, **kwargs)

    monkeypatch.setattr(sp.backend, "complete_and_claim", combined)
    monkeypatch.setattr("spoolhouse.worker.worker.MAX_OUTAGE_BACKOFF", 0.01)
    worker = sp.worker(threads=1)
    runner = threading.Thread(target=worker.run, kwargs={"burst": True, "shutdown_timeout": 10},
                              daemon=True)
    runner.start()
    runner.join(60)
    if runner.is_alive():  # a burst run waits for acks it has lost track of
        worker.stop(hard=True)
        runner.join(10)
        pytest.fail("the burst run did not end: some successes were never stored")
    assert failed and sum(rode) > 0
    infos = [h.info() for h in handles]
    assert all(i is not None and i.state is JobState.SUCCEEDED for i in infos)
    assert all(i is not None and i.attempt == 1 for i in infos)  # nothing ran twice


def test_a_worker_claims_ahead_about_fifty_milliseconds_of_work(sp: Spooler) -> None:
    """Jobs held ahead wait when their worker stops or is cut off: few slow ones, many fast."""
    from spoolhouse.worker.worker import PREFETCH_MAX

    worker = sp.worker()
    for avg, expected in [(None, PREFETCH_MAX), (0.00001, PREFETCH_MAX), (0.001, 50),
                          (0.005, 10), (0.009, 5), (0.2, 1)]:
        worker._avg = avg
        assert worker._prefetch_now() == expected, avg
    assert sp.worker(prefetch=8)._prefetch_now() == 8


def test_heartbeat_warns_of_a_lost_lease_but_not_of_an_ack_being_stored(
    sp: Spooler, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat that races an ack batch finds those leases gone: no false lease_lost."""
    from spoolhouse.context import RunningJob

    @sp.task(name="t")
    def t() -> None: ...

    t.spool_many([(), ()])
    worker = sp.worker()
    acked, stolen = sp.backend.claim(["default"], worker_id=worker.worker_id, now=clock.now(),
                                     lease=30, limit=2)
    for job in (acked, stolen):
        worker._held[job.id] = (job, RunningJob(job))
    # the flusher is storing ``acked``'s success right now
    worker._committing = {acked.id}
    assert sp.backend.complete(acked.id, acked.lease or "", now=clock.now(), result=None,
                               expires_at=None)
    # ``stolen`` really was taken away: rescued after its lease ran out
    clock.advance(31)
    assert [j.id for j in sp.backend.rescue_expired(now=clock.now(), max_lost=3, error="{}",
                                                    expires_at=None)] == [stolen.id]
    with caplog.at_level("WARNING", logger="spoolhouse.worker"):
        worker.heartbeat()
    lost = [r.getMessage() for r in caplog.records if "lease_lost" in r.getMessage()]
    assert lost == [f"job {stolen.id}: lease_lost (rescued elsewhere)"]


def test_a_stop_signal_while_the_worker_lock_is_held_does_not_hang(tmp_path: object) -> None:
    """The child's SIGTERM handler must not take the lock the interrupted thread holds."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import os, signal
        from spoolhouse import Spooler
        from spoolhouse.worker.supervisor import _stop_on_signals

        worker = Spooler("memory://").worker()
        _stop_on_signals(worker)
        with worker._changed:  # the main thread holds the lock, as in _step
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # bytecodes: the handler runs here
                pass
        assert worker._stop.wait(10), "stop never arrived"
        print("stopped")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stopped"


def test_a_claim_that_raises_stops_the_run_loop_with_that_error(
    sp: Spooler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever thread claims (an idle executor, usually), a broken claim ends run()."""

    @sp.task(name="t")
    def t() -> None: ...

    t.spool()

    def broken(*args: object, **kwargs: object) -> list[Job]:
        raise RuntimeError("claim is broken")

    monkeypatch.setattr(sp.backend, "claim", broken)
    with pytest.raises(RuntimeError, match="claim is broken"):
        sp.worker(threads=2).run(burst=True, shutdown_timeout=1)


@pytest.mark.parametrize("release_at_exit", [True, False])
def test_a_cold_stop_releases_running_jobs_unless_left_to_the_supervisor(
    sp: Spooler, release_at_exit: bool
) -> None:
    started = threading.Event()
    finish = threading.Event()

    @sp.task(name="hold")
    def hold() -> None:
        started.set()
        finish.wait(10)

    job = hold.spool()
    worker = sp.worker(release_at_exit=release_at_exit)
    runner = threading.Thread(target=worker.run, kwargs={"shutdown_timeout": 5})
    runner.start()
    try:
        assert started.wait(10)
        worker.stop(hard=True)
        runner.join(10)
        assert not runner.is_alive()
        # released: due again at once; left to the supervisor: still leased here
        assert job.status() == ("pending" if release_at_exit else "running")
    finally:
        finish.set()
        runner.join(10)
