"""R4 graceful (warm) shutdown and R5 cold shutdown of a worker supervisor.

R4a: 8 running jobs of 3 s (2 processes x 4 threads) plus 100 queued;
SIGTERM to the supervisor. Pass: 0 claims after the signal, the 8 finish,
the supervisor exits <= the jobs' remaining time + 2 s, the 100 queued jobs
are untouched (still pending, attempt 0), lost = 0 once a burst worker drains them.

R4b: 8 jobs that run until the test lets them go; shutdown timeout G (CI 3 s,
SPOOLHOUSE_FULL=1 10 s); a second supervisor B idles beside the first (A).
SIGTERM to A. Pass: after G the 8 leases are released (pending, attempt given
back, lost 0, not failed), B runs them <= S + 2 s after the release, A exits
<= G + 2 s after the signal, and no execution of A's finishes after it let
the jobs go (dup = 0: the jobs are let finish as soon as B runs them, so an
execution A kept running would show in the ledger).

R4c: one SIGTERM to the whole process group (systemd's KillMode=control-group)
is still a warm stop: running jobs finish.

R5: as R4b, with a second SIGTERM 1 s after the first. Pass: A exits <= 2 s
after the second signal, the leases are released at once (not after L), B
re-runs them <= S + 2 s after the release, lost = 0, dup = 0.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import pytest
from harness import (
    FULL,
    SWEEP,
    Scenario,
    WorkerProcess,
    analyse,
    assert_clean_logs,
    assert_store_healthy,
    job_rows,
    owner_pid,
    record_figures,
    start_barrier,
    state_counts,
    wait_until,
)

pytestmark = pytest.mark.slow

SLOTS = 8  # 2 processes x 4 threads


def _started_by(sc: Scenario, ids: set[str], pids: set[int] | None = None) -> dict[str, int]:
    """job id -> start ns of its latest start line (by one of ``pids``, if given)."""
    out: dict[str, int] = {}
    for e in sc.ledger.entries():
        if e.job_id in ids and not e.finished and (pids is None or e.pid in pids):
            out[e.job_id] = max(out.get(e.job_id, 0), e.start_ns)
    return out


def test_r04_warm_stop_finishes_running_jobs_and_claims_nothing(sc: Scenario) -> None:
    worker = sc.procs.worker(processes=2, threads=4, shutdown_timeout=10.0)
    worker.wait_children()
    start_barrier(sc, SLOTS)
    sp = sc.spooler()
    running = {h.id for h in sp.registry.get("sleepy").spool_many([(i, 3.0) for i in range(SLOTS)])}
    wait_until(lambda: len(_started_by(sc, running)) == SLOTS, 20, message="8 jobs running")
    queued = {h.id for h in sp.registry.get("noop").spool_many([(i,) for i in range(100)])}
    sp.close()

    t_sig = time.time_ns()
    worker.signal(signal.SIGTERM)
    code = worker.wait_exit(20)
    t_exit = time.time_ns()
    ends = max(s for s in _started_by(sc, running).values()) + 3_000_000_000
    remaining = max(0.0, (ends - t_sig) / 1e9)
    exit_after = (t_exit - t_sig) / 1e9

    entries = sc.ledger.entries()
    after_signal = [e for e in entries if not e.finished and e.start_ns > t_sig]
    rows = job_rows(sc.db)
    record_figures("R4 warm stop", running=SLOTS, queued=len(queued),
                   remaining_job_time_s=remaining, exit_after_signal_s=exit_after,
                   exit_past_jobs_s=exit_after - remaining, claims_after_signal=len(after_signal))
    assert code == 0
    assert after_signal == [], f"started after the signal: {after_signal[:5]}"
    assert {e.job_id for e in entries if e.finished} == running
    assert all(rows[j]["state"] == "succeeded" for j in running)
    for j in queued:
        assert rows[j]["state"] == "pending" and rows[j]["attempt"] == 0, dict(rows[j])
    assert exit_after <= remaining + 2.0, f"exit {exit_after:.2f}s after SIGTERM; jobs had {remaining:.2f}s left"
    assert_store_healthy(sc.db)

    # lost = 0: the queued jobs are all still there and run later
    drain = sc.procs.worker(processes=1, threads=4, burst=True, name="drain")
    assert drain.wait_exit(60) == 0
    report = analyse(running | queued, sc.ledger.entries())
    assert report.lost == [] and report.dup == 0, report.summary()
    assert_store_healthy(sc.db)
    assert_clean_logs(worker.log(), drain.log())


@dataclass
class Held:
    """8 jobs held by supervisor A, supervisor B idle beside it."""

    a: WorkerProcess
    b: WorkerProcess
    ids: set[str]
    a_pids: set[int]
    b_pids: set[int]


def _hold_eight(sc: Scenario, grace: float) -> Held:
    sc.file("hold").touch()
    a = sc.procs.worker(processes=2, threads=4, shutdown_timeout=grace, name="A")
    a.wait_children()
    start_barrier(sc, SLOTS)
    sp = sc.spooler()
    ids = {h.id for h in sp.registry.get("hold").spool_many([(i, 120.0) for i in range(SLOTS)])}
    sp.close()
    wait_until(lambda: len(_started_by(sc, ids)) == SLOTS, 20, message="8 jobs running on A")
    a_pids = set(a.children())
    assert {e.pid for e in sc.ledger.entries() if e.job_id in ids} <= a_pids
    b = sc.procs.worker(processes=1, threads=SLOTS, shutdown_timeout=10.0, name="B")
    b.wait_children()
    start_barrier(sc, SLOTS)  # A is full, so these run on B: B is up and claiming
    return Held(a, b, ids, a_pids, set(b.children()))


def _watch_release(sc: Scenario, held: Held, timeout: float) -> tuple[int, int, int]:
    """Poll until B runs all 8 (then let them finish) and A has exited.

    Returns the ns when none of the 8 was held by A any more, when B started the
    last of them, and when A's supervisor was first seen gone.
    """
    released_at = 0
    exited_at = 0

    def watch() -> bool:
        nonlocal released_at, exited_at
        if not exited_at and held.a.proc.poll() is not None:
            exited_at = time.time_ns()
        if not released_at:
            rows = job_rows(sc.db)
            if all(rows[j]["state"] != "running" or owner_pid(rows[j]["worker_id"]) not in held.a_pids
                   for j in held.ids):
                released_at = time.time_ns()
                for j in held.ids:
                    assert rows[j]["state"] in ("pending", "running"), dict(rows[j])
                    assert rows[j]["lost"] == 0, dict(rows[j])
        on_b = len(_started_by(sc, held.ids, held.b_pids)) == SLOTS
        if on_b:
            # let the jobs finish at once: on B, and on A if A still ran them (a dup)
            sc.file("hold").unlink(missing_ok=True)
        return bool(exited_at) and on_b

    wait_until(watch, timeout, interval=0.01,
               message="A to release the 8 jobs and exit, and B to run them")
    return released_at, max(_started_by(sc, held.ids, held.b_pids).values()), exited_at


def _finish(sc: Scenario, held: Held, scenario_name: str, figures: dict[str, float]) -> None:
    sc.file("hold").unlink(missing_ok=True)
    wait_until(lambda: all(r["state"] == "succeeded" for j, r in job_rows(sc.db).items() if j in held.ids),
               30, message="the 8 jobs to succeed on B")
    assert held.b.stop(timeout=30) == 0
    entries = sc.ledger.entries()
    report = analyse(held.ids, entries)
    late_a = [e for e in entries if e.job_id in held.ids and e.finished and e.pid in held.a_pids]
    b_attempts = sorted({e.attempt for e in entries if e.job_id in held.ids and e.pid in held.b_pids})
    record_figures(scenario_name, **figures, dup=report.dup, a_executions_finished=len(late_a),
                   b_attempts=str(b_attempts))
    assert report.lost == [], report.summary()
    assert late_a == [], f"A kept running released jobs to the end: {late_a[:3]}"
    assert report.dup == 0, report.summary()
    assert b_attempts == [1], "the released attempt was not given back"
    rows = job_rows(sc.db)
    assert all(rows[j]["lost"] == 0 for j in held.ids)
    assert_store_healthy(sc.db)
    assert_clean_logs(held.b.log())


def test_r04_warm_stop_past_grace_releases_leases(sc: Scenario) -> None:
    grace = 10.0 if FULL else 3.0
    held = _hold_eight(sc, grace)
    t_sig = time.time_ns()
    held.a.signal(signal.SIGTERM)
    released_at, b_start, t_exit = _watch_release(sc, held, grace + 20)
    release_after = (released_at - t_sig) / 1e9
    rerun_after = max(0.0, (b_start - released_at) / 1e9)  # B may claim between two polls
    exit_after = (t_exit - t_sig) / 1e9
    figures = {"grace_s": grace, "release_after_signal_s": release_after,
               "rerun_after_release_s": rerun_after, "a_exit_after_signal_s": exit_after}
    try:
        assert held.a.proc.returncode == 0
        assert grace - 0.2 <= release_after <= grace + 1.5, release_after
        assert rerun_after <= SWEEP + 2.0, rerun_after
        assert exit_after <= grace + 2.0, f"A exited {exit_after:.2f}s after SIGTERM (G = {grace}s)"
    finally:
        _finish(sc, held, "R4 warm stop past grace", figures)


def test_r05_cold_stop_releases_leases_at_once(sc: Scenario) -> None:
    held = _hold_eight(sc, 30.0)
    t_sig = time.time_ns()
    held.a.signal(signal.SIGTERM)
    time.sleep(1.0)  # the fault: a second signal one second after the first
    t_sig2 = time.time_ns()
    held.a.signal(signal.SIGTERM)
    released_at, b_start, t_exit = _watch_release(sc, held, 20)
    figures = {"exit_after_second_signal_s": (t_exit - t_sig2) / 1e9,
               "release_after_second_signal_s": (released_at - t_sig2) / 1e9,
               "rerun_after_release_s": max(0.0, (b_start - released_at) / 1e9),
               "exit_after_first_signal_s": (t_exit - t_sig) / 1e9}
    try:
        assert held.a.proc.returncode == 0
        assert figures["exit_after_second_signal_s"] <= 2.0
        assert figures["release_after_second_signal_s"] <= 2.0
        assert figures["rerun_after_release_s"] <= SWEEP + 2.0
        assert state_counts(sc.db).get("failed", 0) == 0
    finally:
        _finish(sc, held, "R5 cold stop", figures)


def test_r04_sigterm_to_the_process_group_is_a_warm_stop(sc: Scenario) -> None:
    worker = sc.procs.worker(processes=1, threads=2, shutdown_timeout=30.0)
    worker.wait_children()
    start_barrier(sc, 2)
    sp = sc.spooler()
    ids = {h.id for h in sp.registry.get("sleepy").spool_many([(i, 3.0) for i in range(2)])}
    sp.close()
    wait_until(lambda: len(_started_by(sc, ids)) == 2, 20, message="2 jobs running")
    # what systemd (KillMode=control-group) and `kill -TERM -PGID` do: every process gets it
    os.killpg(worker.pid, signal.SIGTERM)  # our own session: the group is the supervisor's
    assert worker.wait_exit(40) == 0
    assert {e.job_id for e in sc.ledger.finished()} == ids, "running jobs were not let finish"
