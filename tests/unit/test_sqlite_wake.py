"""Cross-process wake-ups of the SQLite backend (spoolhouse.backends.sqlite.wake).

Waiters run in separate processes started with ``spawn``, as worker processes
are; each test waits on a reported state with a deadline, never on a sleep.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from spoolhouse.backends.sqlite import SQLiteBackend
from spoolhouse.backends.sqlite.wake import (
    MAX_SOCKET_PATH,
    WakeChannel,
    default_wake_root,
    wake_dir_for,
)
from spoolhouse.job import Job, new_job_id

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")

NOW = 1_700_000_000.0
WAIT = 20.0  # a waiter's timeout: a wake-up must come long before it


@pytest.fixture
def wake_root() -> Iterator[str]:
    # short, so socket paths stay far below the sun_path limit
    root = tempfile.mkdtemp(prefix="shw-", dir="/tmp" if os.path.isdir("/tmp") else None)
    yield root
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(root)


def _channel_waiter(directory: str, queues: list[str], ready: Any, out: Connection) -> None:
    channel = WakeChannel(directory)
    channel.listen()
    ready.set()
    woken = channel.wait(queues, WAIT)
    out.send((woken, time.monotonic()))
    channel.close()


def _backend_waiter(url: str, wake_root: str, ready: Any, out: Connection) -> None:
    backend = SQLiteBackend(url, wake_dir=wake_root)
    assert backend.claim(["default"], worker_id="w", now=NOW, lease=30) == []
    backend.wait(["default"], WAIT)  # the first wait arms the socket and returns at once
    ready.set()
    backend.wait(["default"], WAIT)
    woke_at = time.monotonic()
    claimed = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
    out.send((woke_at, [j.id for j in claimed]))
    backend.close()


def _start(target: Any, *args: Any) -> tuple[Any, Any, Connection]:
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, ready, sender))
    proc.start()
    assert ready.wait(60), "the waiter process did not start"
    return proc, ready, receiver


def test_a_waiter_in_another_process_wakes_at_once(wake_root: str) -> None:
    directory = wake_dir_for("/srv/app/spool.db", wake_root)
    proc, _, receiver = _start(_channel_waiter, directory, ["default"])
    sender = WakeChannel(directory)
    sent_at = time.monotonic()
    assert sender.notify("default") == 1
    assert receiver.poll(WAIT + 10), "the waiter never answered"
    woken, woke_at = receiver.recv()
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert woken is True
    # CLOCK_MONOTONIC is shared by all processes of the machine
    assert woke_at - sent_at < 1.0, f"woke {woke_at - sent_at:.3f}s after the notify"
    # the waiter removed its socket, and with it the directory it left empty
    assert not os.path.exists(directory)


def test_enqueue_in_one_process_wakes_a_worker_in_another(tmp_path: Path, wake_root: str) -> None:
    url = f"sqlite:///{tmp_path / 'spool.db'}"
    proc, _, receiver = _start(_backend_waiter, url, wake_root)
    producer = SQLiteBackend(url, wake_dir=wake_root)
    job = Job(id=new_job_id(NOW), task="t", queue="default", payload=b"x", run_at=NOW)
    sent_at = time.monotonic()
    producer.enqueue(job, now=NOW)
    assert receiver.poll(WAIT + 10), "the worker never answered"
    woke_at, claimed = receiver.recv()
    proc.join(timeout=30)
    producer.close()
    assert proc.exitcode == 0
    assert claimed == [job.id]
    assert woke_at - sent_at < 1.0, f"woke {woke_at - sent_at:.3f}s after the enqueue"


class _SignallingPoller:
    """Wraps a listener's poller to tell the test each time the waiter blocks."""

    def __init__(self, inner: Any, entered: threading.Event) -> None:
        self.inner = inner
        self.entered = entered

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        self.entered.set()
        result: list[tuple[int, int]] = self.inner.poll(timeout)
        return result


def test_waiters_ignore_other_queues(wake_root: str) -> None:
    channel = WakeChannel(os.path.join(wake_root, "db"))
    result: list[tuple[bool, float]] = []
    blocked = threading.Event()
    first_done = threading.Event()

    def waiter() -> None:
        channel.listen()
        listener = channel._local.listener
        assert listener is not None
        listener.poller = _SignallingPoller(listener.poller, blocked)  # type: ignore[assignment]
        started = time.monotonic()
        woken = channel.wait(["mail"], 1.0)
        result.append((woken, time.monotonic() - started))
        first_done.set()
        started = time.monotonic()
        woken = channel.wait(["mail"], WAIT)
        result.append((woken, time.monotonic() - started))

    thread = threading.Thread(target=waiter)
    thread.start()
    assert blocked.wait(10)
    blocked.clear()
    assert channel.notify("reports") == 1
    # the waiter reads the datagram, sees another queue, and blocks again
    assert blocked.wait(10)
    assert result == []
    assert first_done.wait(10)
    assert result[0][0] is False and result[0][1] >= 0.99
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        channel.notify("mail")
        thread.join(timeout=0.05)
    assert len(result) == 2
    assert result[1][0] is True and result[1][1] < 5.0
    channel.close()


def test_the_first_wait_arms_and_returns_at_once(wake_root: str) -> None:
    channel = WakeChannel(os.path.join(wake_root, "db"))
    started = time.monotonic()
    assert channel.wait(["q"], WAIT) is True
    assert time.monotonic() - started < 1.0
    assert len(os.listdir(channel.directory)) == 1
    # a wake-up sent before the next wait is kept for it
    assert channel.notify("q") == 1
    assert channel.wait(["q"], WAIT) is True
    started = time.monotonic()
    assert channel.wait(["q"], 0.2) is False
    assert time.monotonic() - started >= 0.19
    channel.close()
    assert not os.path.exists(channel.directory)


def test_sockets_of_dead_processes_are_removed(wake_root: str) -> None:
    channel = WakeChannel(os.path.join(wake_root, "db"))
    assert channel.notify("q") == 0  # no directory yet: nobody ever waited
    os.mkdir(channel.directory, 0o700)
    dead = os.path.join(channel.directory, "99999-deadbeef.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(dead)
    sock.close()  # the file stays, nobody reads it: what a SIGKILL leaves behind
    assert os.path.exists(dead)
    assert channel.notify("q") == 0
    assert not os.path.exists(dead)


def test_a_waiter_that_dies_after_being_notified_is_removed(wake_root: str) -> None:
    """The sender keeps a socket connected to each waiter; when that waiter's socket
    goes away (SIGKILL leaves the file behind), the next notify drops and unlinks it."""
    sender = WakeChannel(os.path.join(wake_root, "db"))
    waiter = WakeChannel(sender.directory)
    assert waiter.listen()
    listener = waiter._local.listener
    assert listener is not None
    assert sender.notify("q") == 1
    assert listener.drain() == [b"q"]
    assert list(sender._peers) == [listener.path]
    listener.sock.close()  # dies without unlinking its file
    assert os.path.exists(listener.path)
    assert sender.notify("q") == 0
    assert not os.path.exists(listener.path)
    assert sender._peers == {}


def test_a_waiter_that_leaves_is_forgotten(wake_root: str) -> None:
    sender = WakeChannel(os.path.join(wake_root, "db"))
    stays, leaves = WakeChannel(sender.directory), WakeChannel(sender.directory)
    results: list[int] = []

    def second_waiter() -> None:  # listeners are per thread
        leaves.listen()
        results.append(sender.notify("q"))
        leaves.close()  # unlinks its file and closes its socket
        results.append(sender.notify("q"))

    stays.listen()
    thread = threading.Thread(target=second_waiter)
    thread.start()
    thread.join(timeout=30)
    assert results == [2, 1]
    assert len(sender._peers) == 1  # no descriptor kept for the waiter that left
    stays.close()
    assert sender.notify("q") == 0
    assert sender._peers == {}


def test_wake_directory_is_private_and_per_database(wake_root: str) -> None:
    a = wake_dir_for("/srv/a/spool.db", wake_root)
    b = wake_dir_for("/srv/b/spool.db", wake_root)
    assert a != b
    assert a == wake_dir_for("/srv/a/../a/spool.db", wake_root)
    assert os.path.dirname(a) == wake_root
    assert len(os.path.basename(a)) == 16
    channel = WakeChannel(a)
    assert channel.enabled
    assert not os.path.exists(a)  # senders create nothing
    assert channel.notify("q") == 0
    assert channel.listen() is True
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o700
    assert default_wake_root().endswith(f"spoolhouse-{os.getuid()}")
    channel.close()


def test_a_too_long_path_disables_wake_ups_but_wait_still_times_out(wake_root: str) -> None:
    deep = os.path.join(wake_root, "x" * MAX_SOCKET_PATH)
    channel = WakeChannel(deep)
    assert channel.enabled is False
    assert channel.notify("q") == 0
    started = time.monotonic()
    assert channel.wait(["q"], 0.2) is False
    assert time.monotonic() - started >= 0.19


def test_a_directory_owned_by_someone_else_is_not_used(wake_root: str) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    directory = os.path.join(wake_root, "theirs")
    os.mkdir(directory, 0o777)
    os.chown(directory, 65534, 65534)
    planted = os.path.join(directory, "1-planted.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(planted)
    try:
        channel = WakeChannel(directory)
        assert channel.listen() is False  # no socket of ours in someone else's directory
        assert channel.notify("q") == 0  # and nothing sent into it
        started = time.monotonic()
        assert channel.wait(["q"], 0.1) is False  # waiting falls back to the timeout
        assert time.monotonic() - started >= 0.09
    finally:
        sock.close()


def test_a_vanished_socket_file_is_bound_again(wake_root: str) -> None:
    channel = WakeChannel(os.path.join(wake_root, "db"))
    assert channel.listen() is True
    [name] = os.listdir(channel.directory)
    os.unlink(os.path.join(channel.directory, name))  # a temp-dir cleaner
    assert channel.wait(["q"], WAIT) is True  # re-armed at once
    assert len(os.listdir(channel.directory)) == 1
    channel.close()


def _forked_listen(channel: WakeChannel, out: Connection) -> None:
    out.send((channel.listen(), sorted(os.listdir(channel.directory))))
    channel.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_binds_its_own_socket(wake_root: str) -> None:
    channel = WakeChannel(os.path.join(wake_root, "db"))
    channel.listen()
    [parents] = os.listdir(channel.directory)
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_forked_listen, args=(channel, sender))
    proc.start()
    assert receiver.poll(30)
    bound, names = receiver.recv()
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert bound is True and len(names) == 2 and parents in names
    # the child's exit removed its own socket, not the parent's
    assert os.listdir(channel.directory) == [parents]
    assert channel.notify("q") == 1
    channel.close()


def test_transitions_that_add_work_wake_waiters(tmp_path: Path, wake_root: str) -> None:
    path = tmp_path / "spool.db"
    backend = SQLiteBackend(f"sqlite:///{path}", wake_dir=wake_root)
    # stands in for a worker in another process: same directory, own socket
    waiter = WakeChannel(wake_dir_for(str(path), wake_root))
    assert waiter.listen() is True

    def woke() -> bool:
        # a datagram is in the socket as soon as sendto() returns: no waiting needed
        return waiter.wait(["default"], 0)

    def job(**fields: Any) -> Job:
        return Job(id=new_job_id(NOW), task="t", queue="default", payload=b"x", **fields)

    try:
        backend.enqueue(job(max_attempts=9), now=NOW)
        assert woke()
        assert not woke()
        [a] = backend.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert not woke()  # claiming adds no work
        assert a.lease is not None
        assert backend.extend_leases({a.id: a.lease}, now=NOW, lease=30)
        assert not woke()
        assert backend.retry(a.id, a.lease, now=NOW, run_at=NOW + 60, error="{}")
        assert woke()  # a future run_at too: waiters recompute their next_due
        [a] = backend.claim(["default"], worker_id="w", now=NOW + 60, lease=30)
        assert a.lease is not None
        assert backend.release(a.id, a.lease, now=NOW + 60)
        assert woke()
        [a] = backend.claim(["default"], worker_id="w", now=NOW + 60, lease=30)
        assert a.lease is not None
        assert backend.rescue(a.id, a.lease, now=NOW + 60, max_lost=9, error="{}") is not None
        assert woke()
        [a] = backend.claim(["default"], worker_id="w", now=NOW + 60, lease=30)
        assert backend.rescue_expired(now=NOW + 100, max_lost=9, error="{}") != []
        assert woke()
        [a] = backend.claim(["default"], worker_id="w", now=NOW + 100, lease=30)
        assert a.lease is not None
        assert backend.fail(a.id, a.lease, now=NOW + 100, error="{}", expires_at=None)
        assert not woke()  # a final state adds no work
        assert backend.requeue(a.id, now=NOW + 100)
        assert woke()
        backend.enqueue_many([job(), job()], now=NOW)
        assert woke()
        keyed = backend.enqueue(job(key="k"), now=NOW)
        assert woke()
        assert backend.enqueue(job(key="k"), now=NOW).id == keyed.id
        assert not woke()  # nothing was stored
    finally:
        waiter.close()
        backend.close()
