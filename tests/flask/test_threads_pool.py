"""``@spooler.thread``: a bounded, lazy, fork-safe pool that pushes the Flask app context."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest
from flask import Flask, current_app

from spoolhouse import ConfigurationError, QueueFull, Spooler
from spoolhouse.threads import ThreadTask

MakeApp = Callable[..., Flask]
WAIT = 10.0  # seconds: a deadline, never a pause


@pytest.fixture
def spooler() -> Iterator[Spooler]:
    s = Spooler("memory://")
    yield s
    s.close()


def test_calling_returns_a_future_and_the_pool_is_lazy(spooler: Spooler) -> None:
    @spooler.thread
    def add(a: int, b: int) -> int:
        return a + b

    assert isinstance(add, ThreadTask)
    assert add._pool is None  # nothing started before the first call
    future = add(2, 3)
    assert isinstance(future, Future)
    assert future.result(timeout=WAIT) == 5
    assert add.fn(1, 1) == 2  # the function itself, run here
    add.shutdown()


def test_runs_on_named_pool_threads_never_more_than_max_workers(spooler: Spooler) -> None:
    release = threading.Event()
    running = threading.Semaphore(0)
    names: set[str] = set()

    @spooler.thread(max_workers=2, max_pending=10, name="bounded")
    def hold() -> None:
        names.add(threading.current_thread().name)
        running.release()
        release.wait(WAIT)

    futures = [hold() for _ in range(6)]
    assert running.acquire(timeout=WAIT) and running.acquire(timeout=WAIT)
    assert not running.acquire(timeout=0.05)  # a third call waits for a thread
    release.set()
    for f in futures:
        f.result(timeout=WAIT)
    assert len(names) == 2 and all(n.startswith("spoolhouse-bounded") for n in names)
    hold.shutdown()


def test_a_full_pool_refuses_with_a_clear_error(spooler: Spooler) -> None:
    release = threading.Event()

    @spooler.thread(max_workers=1, max_pending=1)
    def hold() -> None:
        release.wait(WAIT)

    first, second = hold(), hold()
    with pytest.raises(QueueFull, match=r"1 thread\(s\) are busy.*max_pending=.*\.spool\(\)"):
        hold()
    release.set()
    first.result(timeout=WAIT)
    second.result(timeout=WAIT)
    hold().result(timeout=WAIT)  # room again once calls finished
    hold.shutdown()


def test_block_waits_for_room_then_gives_up_after_its_timeout(spooler: Spooler) -> None:
    release = threading.Event()

    @spooler.thread(max_workers=1, max_pending=0, block=True, timeout=0.05)
    def hold() -> None:
        release.wait(WAIT)

    first = hold()
    with pytest.raises(QueueFull):
        hold()  # waited 50 ms for room that never came
    waiter_result: list[Future[None]] = []
    waiter = threading.Thread(target=lambda: waiter_result.append(hold.submit()))
    hold.timeout = WAIT
    waiter.start()
    release.set()
    waiter.join(WAIT)
    first.result(timeout=WAIT)
    waiter_result[0].result(timeout=WAIT)
    hold.shutdown()


def test_exceptions_are_logged_and_kept_in_the_future(spooler: Spooler,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    @spooler.thread(name="explode")
    def explode() -> None:
        raise RuntimeError("kaboom")

    with caplog.at_level(logging.ERROR, logger="spoolhouse.threads"):
        future = explode()
        with pytest.raises(RuntimeError, match="kaboom"):
            future.result(timeout=WAIT)
        explode.shutdown(wait=True)  # done callbacks have run
    record = next(r for r in caplog.records if r.name == "spoolhouse.threads")
    assert "explode raised RuntimeError: kaboom" in record.getMessage()
    assert record.exc_info is not None


def test_pushes_the_app_current_at_the_call(spooler: Spooler, make_app: MakeApp) -> None:
    @spooler.thread
    def app_name() -> str:
        return str(current_app.name)

    unbound = make_app(FLAG="x")
    with unbound.app_context():
        assert app_name().result(timeout=WAIT) == unbound.name
    app_name.shutdown()


def test_pushes_the_spoolers_app_when_none_is_current(spooler: Spooler,
                                                      make_app: MakeApp) -> None:
    @spooler.thread
    def setting() -> str:
        return str(current_app.config["FLAG"])

    make_app(spooler, SPOOLHOUSE_URL="memory://", FLAG="bound")
    assert setting().result(timeout=WAIT) == "bound"
    setting.shutdown()


def test_no_app_no_context() -> None:
    from flask import has_app_context

    @Spooler("memory://").thread
    def inside() -> bool:
        return has_app_context()

    assert inside().result(timeout=WAIT) is False
    inside.shutdown()


def test_options_are_checked(spooler: Spooler) -> None:
    with pytest.raises(TypeError, match="unknown option.*max_workers"):
        spooler.thread(workers=3)
    with pytest.raises(ConfigurationError, match="max_workers must be an int >= 1"):
        spooler.thread(max_workers=0)(print)
    with pytest.raises(ConfigurationError, match="max_pending"):
        spooler.thread(max_pending=-1)(print)


def _call_in_child(task: ThreadTask[[int], int], conn: multiprocessing.connection.Connection
                   ) -> None:
    conn.send((os.getpid(), task(20).result(timeout=WAIT)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_the_pool_is_created_again_after_fork(spooler: Spooler) -> None:
    release = threading.Event()

    @spooler.thread(max_workers=1, max_pending=0)
    def double(x: int) -> int:
        if x == 0:
            release.wait(WAIT)
        return 2 * x

    busy = double(0)  # the parent's only thread is busy and its queue is full
    with pytest.raises(QueueFull):
        double(1)
    ctx = multiprocessing.get_context("fork")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_call_in_child, args=(double, child_conn))
    child.start()
    try:
        assert parent_conn.poll(WAIT), "the forked child never answered"
        pid, value = parent_conn.recv()
    finally:
        child.join(WAIT)
        if child.is_alive():
            child.kill()
    assert pid != os.getpid() and value == 40  # a fresh pool with free slots in the child
    release.set()
    assert busy.result(timeout=WAIT) == 0
    double.shutdown()
