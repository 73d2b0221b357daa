"""The app the Redis reliability tests run: a Spooler on Redis and ledger-writing tasks.

The Redis twin of ``sh_chaos_app`` (same ledger lines, same timings: lease
5 s, heartbeat 1 s), configured from the environment so that ``spoolhouse
--app redis_chaos_app:spooler worker`` in a subprocess (or in a network
namespace) finds the test's server and files:

* ``SPOOLHOUSE_REDIS_URL``: the Redis server (``redis://host:port/0``);
* ``SPOOLHOUSE_REDIS_PREFIX``: the key prefix, one per test, so tests never
  see each other's jobs on a shared server;
* ``SPOOLHOUSE_LEDGER``: the ledger file every task appends to (see harness.py);
* ``SPOOLHOUSE_CTL``: the control directory (barrier files).

Also holds the few helpers the Redis tests share (:func:`redis_env`,
:func:`start_barrier`, :func:`job_states`), since the SQLite harness reads its
store with ``sqlite3``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sh_chaos_app import AppendFile

from spoolhouse import Spooler, current_job

if TYPE_CHECKING:  # the harness lives beside the tests, not on the workers' path
    from harness import Scenario

LEASE = 5.0
HEARTBEAT = 1.0


def make_spooler(url: str, prefix: str, ledger_path: str, ctl: str) -> Spooler:
    """A spooler on ``url``/``prefix`` whose tasks write to ``ledger_path`` and read ``ctl``."""
    sp = Spooler(url, prefix=prefix, lease=LEASE, heartbeat=HEARTBEAT)
    ledger = AppendFile(ledger_path)

    def started() -> tuple[str, int, int, int]:
        job = current_job()
        start = time.time_ns()
        ledger.write(f"{job.id} {job.attempt} {os.getpid()} {start} 0\n")
        return job.id, job.attempt, os.getpid(), start

    def finished(job_id: str, attempt: int, pid: int, start: int) -> None:
        ledger.write(f"{job_id} {attempt} {pid} {start} {time.time_ns()}\n")

    @sp.task(name="sleepy")
    def sleepy(i: int, seconds: float) -> None:
        record = started()
        time.sleep(seconds)
        finished(*record)

    @sp.task(name="barrier")
    def barrier(tag: str, parties: int, timeout: float) -> None:
        """Block until ``parties`` barrier jobs of ``tag`` have started (not in the ledger)."""
        path = os.path.join(ctl, f"barrier-{tag}")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            with open(path) as fh:
                if fh.read().count("\n") >= parties:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"barrier {tag}: fewer than {parties} parties after {timeout}s")

    return sp


def _from_env() -> Spooler:
    url = os.environ["SPOOLHOUSE_REDIS_URL"]
    prefix = os.environ.get("SPOOLHOUSE_REDIS_PREFIX")
    ledger = os.environ.get("SPOOLHOUSE_LEDGER")
    ctl = os.environ.get("SPOOLHOUSE_CTL")
    if not (prefix and ledger and ctl):
        raise RuntimeError(
            "redis_chaos_app needs SPOOLHOUSE_REDIS_URL, SPOOLHOUSE_REDIS_PREFIX, "
            "SPOOLHOUSE_LEDGER and SPOOLHOUSE_CTL"
        )
    return make_spooler(url, prefix, ledger, ctl)


spooler = _from_env() if os.environ.get("SPOOLHOUSE_REDIS_URL") else None


# -- test-side helpers ----------------------------------------------------------------
def redis_env(sc: Scenario, url: str, prefix: str) -> Spooler:
    """Point the scenario's processes at ``url``/``prefix``; return a spooler for the test."""
    sc.env["SPOOLHOUSE_REDIS_URL"] = url
    sc.env["SPOOLHOUSE_REDIS_PREFIX"] = prefix
    return make_spooler(url, prefix, str(sc.ledger.path), str(sc.ctl))


def job_states(sp: Spooler, ids: Iterable[str]) -> dict[str, Any]:
    """``id -> Job`` (``None`` for an id Redis does not hold), read through the backend."""
    return {job_id: sp.backend.get(job_id) for job_id in ids}


def start_barrier(sc: Scenario, sp: Spooler, parties: int, timeout: float = 60.0) -> list[int]:
    """Wait until ``parties`` worker slots are up and running jobs; return their pids.

    Spools ``parties`` barrier jobs that each block until all of them have
    started, so each occupies its own slot at once, then waits for them to be
    recorded as succeeded.
    """
    from harness import wait_until

    tag = f"b{time.monotonic_ns()}"
    handles = sp.registry.get("barrier").spool_many([(tag, parties, timeout)] * parties)
    path = sc.file(f"barrier-{tag}")

    def done() -> list[int]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        lines = text[: text.rfind("\n") + 1].split()
        return [int(x) for x in lines] if len(lines) >= parties else []

    pids = wait_until(done, timeout, message=f"{parties} barrier jobs running at once")

    def succeeded() -> bool:
        jobs = job_states(sp, [h.id for h in handles])
        return all(j is not None and j.state == "succeeded" for j in jobs.values())

    wait_until(succeeded, timeout, message="barrier jobs recorded as succeeded")
    return pids
