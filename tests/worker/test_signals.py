"""Lifecycle signals and the worker's outcome hook."""

from __future__ import annotations

from typing import Any

import pytest

from spoolhouse import FakeClock, Spooler, current_job, signals


@pytest.fixture
def sp() -> Spooler:
    return Spooler("memory://", clock=FakeClock())


def test_every_lifecycle_signal_fires_once_per_event(sp: Spooler) -> None:
    events: list[tuple[str, str, Any]] = []

    def recorder(name: str) -> Any:
        def receive(sender: Spooler, *, job: Any, **extra: Any) -> None:
            assert sender is sp
            events.append((name, job.task, extra.get("error")))
        return receive

    receivers = {name: recorder(name) for name in
                 ("spooled", "started", "succeeded", "retried", "failed", "cancelled")}
    for name, fn in receivers.items():
        getattr(signals, f"job_{name}").connect(fn)
    try:
        @sp.task(name="ok")
        def ok() -> int:
            return 1

        @sp.task(name="flaky", retries=1, backoff=0, jitter=0)
        def flaky() -> None:
            raise RuntimeError("x")

        @sp.task(name="stoppable")
        def stoppable() -> None:
            job.cancel()
            current_job().progress(1, 2)

        ok.spool()
        flaky.spool()
        job = stoppable.spool()
        sp.drain()
    finally:
        for name, fn in receivers.items():
            getattr(signals, f"job_{name}").disconnect(fn)
    names = [(n, t) for n, t, _ in events]
    assert names.count(("spooled", "ok")) == 1 and names.count(("succeeded", "ok")) == 1
    assert names.count(("started", "flaky")) == 2
    assert names.count(("retried", "flaky")) == 1 and names.count(("failed", "flaky")) == 1
    assert names.count(("cancelled", "stoppable")) == 1
    failed_error = next(e for n, t, e in events if n == "failed")
    assert failed_error["type"] == "RuntimeError"


def test_a_failing_receiver_never_breaks_a_job(sp: Spooler) -> None:
    def broken(sender: Any, **kw: Any) -> None:
        raise ValueError("receiver bug")

    signals.job_succeeded.connect(broken)
    signals.job_spooled.connect(broken)
    try:
        @sp.task(name="t")
        def t() -> int:
            return 3

        job = t.spool()
        sp.drain()
        assert job.result(timeout=1) == 3
    finally:
        signals.job_succeeded.disconnect(broken)
        signals.job_spooled.disconnect(broken)


def test_outcome_hook_reports_kind_and_duration(sp: Spooler) -> None:
    seen: list[tuple[str, str, float]] = []

    @sp.task(name="t", retries=0)
    def t(fail: bool) -> None:
        if fail:
            raise RuntimeError("no")

    t.spool(False)
    t.spool(True)
    sp.worker(on_outcome=lambda job, kind, d: seen.append((job.task, kind, d))).drain()
    assert sorted(k for _, k, _ in seen) == ["failed", "succeeded"]
    assert all(d >= 0 for _, _, d in seen)


def test_spool_hooks_store_headers_the_task_can_read(sp: Spooler) -> None:
    sp.add_spool_hook(lambda task, queue: {"traceparent": f"tp-{task}-{queue}"})
    sp.add_spool_hook(lambda task, queue: None)
    seen = []

    @sp.task(name="h")
    def h() -> None:
        seen.append(current_job().headers)

    h.spool()
    sp.drain()
    assert seen == [{"traceparent": "tp-h-default"}]
