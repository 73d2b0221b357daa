"""The app of ``test_scheduling.py``: limits, priorities, cancellation and unique keys.

Configured from the environment like ``sh_chaos_app`` (``SPOOLHOUSE_DB``,
``SPOOLHOUSE_LEDGER``, ``SPOOLHOUSE_CTL``), so that ``spoolhouse --app
sched_app:spooler worker`` in a subprocess finds the test's files. Lease 5 s,
heartbeat 1 s.

Every task appends the harness's ledger lines (``job_id attempt pid start_ns
0`` when it starts, ``... end_ns`` when it finishes; see ``harness.py``) and,
when it starts, one line to the *notes* file beside the ledger
(``<ledger>.notes``)::

    <job_id> <attempt> <pid> started_at=<claim time> key=<key or ->

so that a test can tell what the backend recorded as the claim time (the
rate limit's clock) apart from when the task really began. Tasks that stop on
cancellation append ``<job_id> <attempt> <pid> aborted`` to the notes.
"""

from __future__ import annotations

import os
import time

from sh_chaos_app import HEARTBEAT, LEASE, AppendFile, barrier_wait

from spoolhouse import Abort, Spooler, current_job

#: rate limit of the ``rated`` task: RATE starts per RATE_PER seconds
RATE = 10
RATE_PER = 2.0


class Recorder:
    """Writes the ledger and notes lines of the running job."""

    def __init__(self, ledger_path: str) -> None:
        self.ledger = AppendFile(ledger_path)
        self.notes = AppendFile(ledger_path + ".notes")

    def started(self) -> tuple[str, int, int, int]:
        running = current_job()
        job = running.job
        start = time.time_ns()
        pid = os.getpid()
        self.ledger.write(f"{job.id} {job.attempt} {pid} {start} 0\n")
        self.notes.write(
            f"{job.id} {job.attempt} {pid} started_at={job.started_at!r} key={_key_or_tick(job)}\n"
        )
        return job.id, job.attempt, pid, start

    def finished(self, job_id: str, attempt: int, pid: int, start: int) -> None:
        self.ledger.write(f"{job_id} {attempt} {pid} {start} {time.time_ns()}\n")

    def note(self, record: tuple[str, int, int, int], text: str) -> None:
        job_id, attempt, pid, _ = record
        self.notes.write(f"{job_id} {attempt} {pid} {text}\n")


def make_spooler(db: str, ledger_path: str, ctl: str) -> Spooler:
    """A spooler on ``db`` whose tasks write to ``ledger_path`` and read ``ctl``."""
    sp = Spooler(f"sqlite:///{db}", lease=LEASE, heartbeat=HEARTBEAT)
    rec = Recorder(ledger_path)

    def held(name: str, max_seconds: float) -> None:
        """Wait while the control file ``name`` exists (at most ``max_seconds``)."""
        flag = os.path.join(ctl, name)
        until = time.monotonic() + max_seconds
        while os.path.exists(flag) and time.monotonic() < until:
            time.sleep(0.01)

    @sp.task(name="work")
    def work(i: int, seconds: float) -> int:
        record = rec.started()
        time.sleep(seconds)
        rec.finished(*record)
        return i

    @sp.task(name="limited", concurrency=2)
    def limited(i: int, seconds: float) -> int:
        record = rec.started()
        time.sleep(seconds)
        rec.finished(*record)
        return i

    @sp.task(name="rated", rate=f"{RATE}/{RATE_PER:g}s")
    def rated(i: int) -> int:
        rec.finished(*rec.started())
        return i

    @sp.task(name="hold")
    def hold(i: int, max_seconds: float) -> None:
        """Runs while the control file ``hold`` exists (at most ``max_seconds``)."""
        record = rec.started()
        held("hold", max_seconds)
        rec.finished(*record)

    @sp.task(name="keyed")
    def keyed(tag: str, max_seconds: float) -> str:
        """Runs while the control file ``hold-key`` exists; returns ``tag``."""
        record = rec.started()
        held("hold-key", max_seconds)
        rec.finished(*record)
        return tag

    @sp.task(name="progress_loop", retries=0)
    def progress_loop(max_seconds: float) -> str:
        """Reports progress every 20 ms; ``progress()`` raises Abort once cancelled."""
        record = rec.started()
        until = time.monotonic() + max_seconds
        i = 0
        try:
            while time.monotonic() < until:
                i += 1
                current_job().progress(i, message="looping")
                time.sleep(0.02)
        except Abort:
            rec.note(record, "aborted")
            raise
        rec.finished(*record)
        return "ran out"

    @sp.task(name="abort_poll", retries=0)
    def abort_poll(max_seconds: float) -> str:
        """Polls ``should_abort()`` (told by the heartbeat) and raises Abort itself."""
        record = rec.started()
        until = time.monotonic() + max_seconds
        while time.monotonic() < until:
            if current_job().should_abort():
                rec.note(record, "aborted")
                raise Abort("asked to stop")
            time.sleep(0.02)
        rec.finished(*record)
        return "ran out"

    @sp.task(name="stubborn", retries=0)
    def stubborn(seconds: float) -> str:
        """Ignores cancellation: sleeps, then returns."""
        record = rec.started()
        time.sleep(seconds)
        rec.finished(*record)
        return "finished anyway"

    @sp.task(name="barrier")
    def barrier(tag: str, parties: int, timeout: float) -> None:
        """``harness.start_barrier``'s task: block until ``parties`` of ``tag`` have started."""
        barrier_wait(ctl, tag, parties, timeout)

    return sp


def _from_env() -> Spooler:
    db = os.environ.get("SPOOLHOUSE_DB")
    ledger = os.environ.get("SPOOLHOUSE_LEDGER")
    ctl = os.environ.get("SPOOLHOUSE_CTL")
    if not (db and ledger and ctl):
        raise RuntimeError("sched_app needs SPOOLHOUSE_DB, SPOOLHOUSE_LEDGER and SPOOLHOUSE_CTL")
    return make_spooler(db, ledger, ctl)


spooler = _from_env() if os.environ.get("SPOOLHOUSE_DB") else None


def _key_or_tick(job: object) -> str:
    """The job's key, or for a periodic run ``periodic:tick:<tick>`` from its headers."""
    import json

    headers = json.loads(getattr(job, "headers", None) or "{}")
    if "spoolhouse-tick" in headers:
        return f"periodic:tick:{headers['spoolhouse-tick']}"
    return getattr(job, "key", None) or "-"
