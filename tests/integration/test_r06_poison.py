"""R6 poison pill: a job that takes its worker process down, every time.

CI size: 1,000 no-op jobs + 1 job that calls ``os._exit(137)`` (and a second
run with 200 jobs + 1 that dereferences NULL: SIGSEGV), 4 worker processes
(SPOOLHOUSE_FULL=1: 1,000 normal jobs in both variants).

Pass: the poison job ends ``failed`` with reason ``worker_lost`` after
exactly K = 3 crash attempts (ledger: attempts 1, 2, 3, each in a different
process); every other job done, lost = 0, dup = 0; the supervisor started
exactly 3 replacement processes and no loop continues after the third crash.
"""

from __future__ import annotations

import json

import pytest
from harness import (
    Scenario,
    analyse,
    assert_clean_logs,
    assert_store_healthy,
    job_rows,
    record_figures,
    size,
    start_barrier,
    state_counts,
    wait_until,
)

from spoolhouse.worker.worker import ACK_BATCH

pytestmark = pytest.mark.slow

K = 3  # Spooler(max_lost=3), the default


@pytest.mark.parametrize(("poison", "normal"), [("crash", 1000), ("segfault", size(200, 1000))])
def test_r06_poison_pill_fails_after_three_crashes(sc: Scenario, poison: str, normal: int) -> None:
    worker = sc.procs.worker(processes=4, threads=1)
    worker.wait_children()
    start_barrier(sc, 4)
    spawned_before = worker.spawned()
    sp = sc.spooler()
    noop = sp.registry.get("noop")
    half = normal // 2
    ids = {h.id for h in noop.spool_many([(i,) for i in range(half)])}
    bad = sp.registry.get(poison).spool(0).id
    ids |= {h.id for h in noop.spool_many([(i,) for i in range(half, normal)])}
    sp.close()

    def settled() -> bool:
        rows = job_rows(sc.db)
        return rows[bad]["state"] == "failed" and all(rows[j]["state"] == "succeeded" for j in ids)

    wait_until(settled, 90, message=lambda: f"poison failed and {normal} jobs done; states "
                                            f"{state_counts(sc.db)}")
    # the process of the third crash is replaced too; then nothing else dies
    wait_until(lambda: worker.spawned() >= spawned_before + K, 30, message="3 replacement processes")
    start_barrier(sc, 4)  # all 4 processes up again: the crashes did not stop the service
    assert worker.stop(timeout=30) == 0

    entries = sc.ledger.entries()
    poison_runs = [e for e in entries if e.job_id == bad]
    report = analyse(ids, entries)
    row = job_rows(sc.db)[bad]
    error = json.loads(row["error"])
    restarts = worker.spawned() - spawned_before
    record_figures(f"R6 poison ({poison})", normal_jobs=normal, lost=len(report.lost), dup=report.dup,
                   poison_attempts=len(poison_runs), poison_state=row["state"],
                   reason=error.get("reason"), restarts=restarts)
    assert [e.attempt for e in poison_runs] == [1, 2, 3], poison_runs
    assert not any(e.finished for e in poison_runs)
    assert len({e.pid for e in poison_runs}) == K, "each crash attempt ran in its own process"
    assert row["state"] == "failed" and row["lost"] == K and row["attempt"] == K
    assert error.get("reason") == "worker_lost", error
    assert report.lost == [] and report.unknown == [], report.summary()
    # acks are batched: the first crash may re-run jobs whose success was not yet
    # recorded (at most two ack batches); a job that crashed before runs only after
    # every pending ack is recorded, so the later crashes re-run nothing
    assert report.dup <= 2 * ACK_BATCH, report.summary()
    assert all(
        sum(1 for e in runs if e.finished) <= 2 for runs in report.by_job.values()
    ), "a job ran more than twice"
    assert restarts == K, f"{restarts} replacement processes for {K} crashes"
    assert_store_healthy(sc.db)
    assert_clean_logs(worker.log())
