"""The supervisor with real child processes: hard timeouts and what the slots tell it.

The parent learns which job each child thread runs from shared memory
(:class:`spoolhouse.worker.supervisor.Slots`), not from a message per job.
These tests check what depends on that: a job that overruns its ``timeout``
is killed and recorded as a timeout while the jobs queued behind it in the
same child are given back, not counted as lost; and a job that finishes in
time is left alone. The supervisor is stepped with :meth:`Supervisor.tick`
until a state is reached or a deadline passes.
"""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spoolhouse.lifecycle import parse_error
from spoolhouse.worker.supervisor import IDLE, Slots, Supervisor, WorkerConfig

APP = textwrap.dedent(
    """
    import os, time
    from spoolhouse import Spooler

    spooler = Spooler(os.environ["SLOTS_TEST_URL"], lease=5.0, heartbeat=1.0)

    @spooler.task(name="hang", timeout=1.0, retries=0)
    def hang() -> None:
        time.sleep(60)  # the workload: runs far past its timeout

    @spooler.task(name="quick", timeout=1.0, retries=0)
    def quick(i: int) -> int:
        return i
    """
)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"slots_app_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(APP)
    monkeypatch.setenv("SLOTS_TEST_URL", f"sqlite:///{tmp_path}/jobs.db")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def run_until(sup: Supervisor, done: Callable[[], bool], timeout: float) -> float:
    """Tick ``sup`` until ``done()``; return the seconds it took (fails after ``timeout``)."""
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < timeout, "supervisor did not get there in time"
        sup.tick(timeout=0.05)
    return time.monotonic() - began


def test_slots_round_trip_and_idle() -> None:
    import multiprocessing

    slots = Slots(multiprocessing.get_context("spawn"), 3)
    assert slots.read() == []
    slots.write(1, 7, 123.5)
    slots.write(2, 0, 9.0)
    assert sorted(slots.read()) == [(0, 9.0), (7, 123.5)]
    slots.clear(1)
    assert slots.read() == [(0, 9.0)]
    assert slots.array[2] == IDLE


def test_overrun_is_killed_recorded_as_timeout_and_the_rest_is_given_back(app: str) -> None:
    config = WorkerConfig(app_ref=f"{app}:spooler", threads=1, shutdown_timeout=5.0)
    sup = Supervisor(config, processes=1)
    spooler = sup.spooler
    hang = spooler.registry.get("hang").spool()
    behind = [spooler.registry.get("quick").spool(i) for i in range(3)]
    sup.start()
    try:
        first_pid = sup.children[0].process.pid
        took = run_until(sup, lambda: hang.status() == "failed", timeout=30)
        info = hang.info()
        error = parse_error(info.error)
        assert error is not None and error["reason"] == "timeout", info.error
        assert info.lost == 0  # a timeout is not a lost worker
        # killed about a second after it started, not after the 5 s lease
        assert info.finished_at is not None and info.started_at is not None
        assert info.finished_at - info.started_at < 1.0 + 1.5
        run_until(sup, lambda: all(h.status() == "succeeded" for h in behind), timeout=30)
        assert [h.result(timeout=1) for h in behind] == [0, 1, 2]
        assert all(h.info().lost == 0 for h in behind)  # given back, not counted lost
        assert sup.children[0].process.pid != first_pid  # the child was replaced
        assert took < 25
    finally:
        sup.stop(cold=True)
        run_until(sup, lambda: sup.done, timeout=30)


def test_jobs_that_finish_in_time_are_left_alone(app: str) -> None:
    config = WorkerConfig(app_ref=f"{app}:spooler", threads=2, shutdown_timeout=5.0)
    sup = Supervisor(config, processes=1)
    handles = sup.spooler.registry.get("quick").spool_many([(i,) for i in range(200)])
    sup.start()
    try:
        first_pid = sup.children[0].process.pid
        run_until(sup, lambda: all(h.status() == "succeeded" for h in handles), timeout=60)
        assert sup.children[0].process.pid == first_pid
        assert sup.restarts == 0
        assert not sup.children[0].timed_out
    finally:
        sup.stop()
        run_until(sup, lambda: sup.done, timeout=30)
