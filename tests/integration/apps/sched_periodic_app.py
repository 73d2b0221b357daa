"""The app of the periodic scenario: one task every second, on a shared SQLite file.

Configured from the environment like ``sched_app``. Each run writes the
harness's ledger lines and a notes line carrying its job's key,
``periodic:tick:<tick>``, from which the test reads which tick it was.
The task sleeps ``WORK`` seconds (its workload) so that a supervisor can be
killed while one of its processes runs it.
"""

from __future__ import annotations

import os
import time

from sched_app import HEARTBEAT, LEASE, Recorder

from spoolhouse import Spooler

#: seconds between ticks, and how long each run works
EVERY = 1
WORK = 0.6
NAME = "tick"


def make_spooler(db: str, ledger_path: str) -> Spooler:
    sp = Spooler(f"sqlite:///{db}", lease=LEASE, heartbeat=HEARTBEAT)
    rec = Recorder(ledger_path)

    @sp.periodic(every=EVERY, name=NAME)
    def tick() -> None:
        record = rec.started()
        time.sleep(WORK)
        rec.finished(*record)

    return sp


def _from_env() -> Spooler:
    db = os.environ.get("SPOOLHOUSE_DB")
    ledger = os.environ.get("SPOOLHOUSE_LEDGER")
    if not (db and ledger):
        raise RuntimeError("sched_periodic_app needs SPOOLHOUSE_DB and SPOOLHOUSE_LEDGER")
    return make_spooler(db, ledger)


spooler = _from_env() if os.environ.get("SPOOLHOUSE_DB") else None
