"""R7 exception retries and the dead-letter state, through worker processes.

CI size (= full size): 3 jobs of a task that raises until a control file
exists, ``retries=4`` (5 executions), backoff 1 s x 2^n with +-20 % jitter;
2 worker processes.

Pass: exactly 5 executions per job; each gap (end of one attempt -> start of
the next, from the ledger) within +-25 % of 1, 2, 4, 8 s (plus 0.15 s of
scheduling slack on the 2-core box); then ``failed`` with the exception's
type, message and traceback stored; after the bug is "fixed" (control file)
``requeue()`` runs each job exactly once more, and it succeeds.
"""

from __future__ import annotations

import pytest
from harness import (
    Scenario,
    assert_clean_logs,
    assert_store_healthy,
    job_rows,
    record_figures,
    start_barrier,
    wait_until,
)

from spoolhouse import JobFailed

pytestmark = pytest.mark.slow

RETRIES = 4
SLACK = 0.15  # seconds: pickup and process scheduling on a loaded 2-core box


def test_r07_retries_with_backoff_then_dead_letter_then_requeue(sc: Scenario) -> None:
    worker = sc.procs.worker(processes=2, threads=1)
    worker.wait_children()
    start_barrier(sc, 2)
    sp = sc.spooler()
    task = sp.registry.get("flaky_until_fixed")
    handles = task.spool_many([(i,) for i in range(3)])
    ids = {h.id for h in handles}

    wait_until(lambda: all(job_rows(sc.db)[j]["state"] == "failed" for j in ids), 40, interval=0.2,
               message="the jobs to exhaust their retries")
    entries = [e for e in sc.ledger.finished() if e.job_id in ids]
    gaps: list[tuple[int, float, float]] = []  # (retry number, measured, nominal)
    for h in handles:
        runs = sorted((e for e in entries if e.job_id == h.id), key=lambda e: e.attempt)
        assert [e.attempt for e in runs] == list(range(1, RETRIES + 2)), runs
        for n in range(1, RETRIES + 1):
            gaps.append((n, (runs[n].start_ns - runs[n - 1].end_ns) / 1e9, 1.0 * 2 ** (n - 1)))

        with pytest.raises(JobFailed) as info:
            h.result(timeout=1)
        failure = info.value
        assert failure.reason == "error"
        assert failure.exc_type == "RuntimeError"
        assert "is broken (attempt 5)" in failure.message
        assert "Traceback (most recent call last)" in failure.traceback
        assert "flaky_until_fixed" in failure.traceback

    ratios = [measured / nominal for _, measured, nominal in gaps]
    record_figures("R7 retries", jobs=len(ids), executions_each=RETRIES + 1,
                   gap_ratio_min=min(ratios), gap_ratio_max=max(ratios),
                   gaps_s=" ".join(f"{m:.2f}/{n:g}" for _, m, n in gaps))
    for n, measured, nominal in gaps:
        assert 0.75 * nominal <= measured <= 1.25 * nominal + SLACK, (
            f"retry {n}: gap {measured:.3f}s, schedule {nominal:g}s +-25 %"
        )

    # the dead jobs are re-driven after the fix, and run exactly once more
    sc.file("fixed").touch()
    for h in handles:
        assert h.requeue() is True
    assert [h.result(timeout=20) for h in handles] == ["fixed"] * 3
    assert worker.stop(timeout=30) == 0
    sp.close()
    finished = [e for e in sc.ledger.finished() if e.job_id in ids]
    for h in handles:
        runs = [e for e in finished if e.job_id == h.id]
        assert len(runs) == RETRIES + 2, f"{h.id}: {len(runs)} executions"
        assert runs[-1].attempt == 1, "requeue resets the attempts"
    rows = job_rows(sc.db)
    assert all(rows[j]["state"] == "succeeded" for j in ids)
    assert_store_healthy(sc.db)
    assert_clean_logs(worker.log())
