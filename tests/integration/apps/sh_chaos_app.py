"""The app the reliability tests run: a Spooler on a SQLite file and ledger-writing tasks.

Configured from the environment, so that ``spoolhouse --app sh_chaos_app:spooler
worker`` in a subprocess finds the test's files:

* ``SPOOLHOUSE_DB``: absolute path of the SQLite database;
* ``SPOOLHOUSE_LEDGER``: the ledger file every task appends to (see harness.py);
* ``SPOOLHOUSE_CTL``: a directory of control files the test creates or removes
  (``hold`` keeps ``hold`` jobs running, ``fixed`` makes ``flaky_until_fixed`` succeed).

Timings follow RELIABILITY.md for tests: lease 5 s, heartbeat 1 s.
"""

from __future__ import annotations

import os
import threading
import time

from spoolhouse import Spooler, current_job

LEASE = 5.0
HEARTBEAT = 1.0


class AppendFile:
    """An ``O_APPEND`` descriptor per process; one ``os.write`` per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._pid = 0
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        data = line.encode()
        with self._lock:
            if self._pid != os.getpid():
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._pid = os.getpid()
            written = os.write(self._fd, data)
        if written != len(data):  # pragma: no cover - a regular file takes short lines whole
            raise OSError(f"short write to {self.path}")


def make_spooler(db: str, ledger_path: str, ctl: str) -> Spooler:
    """A spooler on ``db`` whose tasks write to ``ledger_path`` and read ``ctl``."""
    sp = Spooler(f"sqlite:///{db}", lease=LEASE, heartbeat=HEARTBEAT)
    ledger = AppendFile(ledger_path)

    def started() -> tuple[str, int, int, int]:
        job = current_job()
        start = time.time_ns()
        ledger.write(f"{job.id} {job.attempt} {os.getpid()} {start} 0\n")
        return job.id, job.attempt, os.getpid(), start

    def finished(job_id: str, attempt: int, pid: int, start: int) -> None:
        ledger.write(f"{job_id} {attempt} {pid} {start} {time.time_ns()}\n")

    @sp.task(name="noop")
    def noop(i: int) -> None:
        finished(*started())

    @sp.task(name="sleepy")
    def sleepy(i: int, seconds: float) -> None:
        record = started()
        time.sleep(seconds)
        finished(*record)

    @sp.task(name="hold")
    def hold(i: int, max_seconds: float) -> None:
        """Runs while the control file ``hold`` exists (at most ``max_seconds``)."""
        record = started()
        flag = os.path.join(ctl, "hold")
        until = time.monotonic() + max_seconds
        while os.path.exists(flag) and time.monotonic() < until:
            time.sleep(0.02)
        finished(*record)

    @sp.task(name="crash", retries=3)
    def crash(i: int) -> None:
        """The poison pill: takes its worker process down."""
        started()
        os._exit(137)

    @sp.task(name="segfault", retries=3)
    def segfault(i: int) -> None:
        """The poison pill, native flavour: dereferences NULL (SIGSEGV)."""
        started()
        import ctypes

        ctypes.string_at(0)

    @sp.task(name="flaky_until_fixed", retries=4, backoff=1.0, backoff_factor=2.0, jitter=0.2)
    def flaky_until_fixed(i: int) -> str:
        """Raises until the control file ``fixed`` exists."""
        record = started()
        finished(*record)
        if not os.path.exists(os.path.join(ctl, "fixed")):
            raise RuntimeError(f"flaky_until_fixed({i}) is broken (attempt {record[1]})")
        return "fixed"

    @sp.task(name="barrier")
    def barrier(tag: str, parties: int, timeout: float) -> None:
        """Block until ``parties`` barrier jobs of ``tag`` have started (not in the ledger)."""
        barrier_wait(ctl, tag, parties, timeout)

    return sp


def barrier_wait(ctl: str, tag: str, parties: int, timeout: float) -> None:
    """Sign in at barrier ``tag`` and block until ``parties`` have signed in."""
    path = os.path.join(ctl, f"barrier-{tag}")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    until = time.monotonic() + timeout
    while time.monotonic() < until:  # the barrier's own poll: this task's workload
        with open(path) as fh:
            if fh.read().count("\n") >= parties:  # whole lines only
                return
        time.sleep(0.02)
    raise TimeoutError(f"barrier {tag}: fewer than {parties} parties after {timeout}s")


def _from_env() -> Spooler:
    db = os.environ.get("SPOOLHOUSE_DB")
    ledger = os.environ.get("SPOOLHOUSE_LEDGER")
    ctl = os.environ.get("SPOOLHOUSE_CTL")
    if not (db and ledger and ctl):
        raise RuntimeError("sh_chaos_app needs SPOOLHOUSE_DB, SPOOLHOUSE_LEDGER and SPOOLHOUSE_CTL")
    return make_spooler(db, ledger, ctl)


spooler = _from_env() if os.environ.get("SPOOLHOUSE_DB") else None
