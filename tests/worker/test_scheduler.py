"""Periodic tasks stepped with a fake clock: ticks, missed ticks, clock jumps, racing schedulers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spoolhouse import ConfigurationError, FakeClock, Spooler
from spoolhouse.periodic import parse_rate
from spoolhouse.worker.scheduler import Scheduler

# 2026-01-05 is a Monday; start a little after midnight UTC
START = datetime(2026, 1, 5, 0, 0, 10, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sp(clock: FakeClock) -> Spooler:
    return Spooler("memory://", clock=clock)


def runs(sp: Spooler) -> int:
    return sum(sp.backend.counts().get("default", {}).values())


def test_interval_schedule_runs_once_per_tick(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=30, name="beat")
    def beat() -> None: ...

    scheduler = Scheduler(sp)
    # the first tick (START - 10 s) is within the grace of a new schedule
    assert scheduler.tick() == 1
    assert scheduler.tick() == 0
    clock.advance(19)
    assert scheduler.tick() == 0  # still the same tick
    clock.advance(1)  # START + 20: the next multiple of 30
    assert scheduler.tick() == 1
    for _ in range(10):
        clock.advance(30)
        assert scheduler.tick() == 1
    assert runs(sp) == 12


def test_periodic_runs_are_ordinary_jobs(sp: Spooler, clock: FakeClock) -> None:
    seen = []

    @sp.periodic(every=60, name="p", args=(5,), retries=2)
    def p(n: int) -> int:
        seen.append(n)
        return n * 2

    Scheduler(sp).tick()
    assert sp.drain() == 1
    (job,) = sp.backend.list_jobs()
    assert seen == [5] and job.max_attempts == 3 and job.key is None
    assert json.loads(job.headers or "{}") == {"spoolhouse-periodic": "p",
                                               "spoolhouse-tick": f"{START - 10 - (START - 10) % 60:.0f}"}


def test_new_schedule_does_not_run_a_tick_from_before_it_existed(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(cron="0 3 * * *", name="nightly")
    def nightly() -> None: ...

    clock.advance(14 * 3600)  # 14:00, long after today's 03:00
    assert Scheduler(sp).tick() == 0
    clock.advance(13 * 3600)  # 03:00:10 the next day
    assert Scheduler(sp).tick() == 1


def test_downtime_runs_the_latest_missed_tick_once(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=60, name="m")
    def m() -> None: ...

    scheduler = Scheduler(sp)
    assert scheduler.tick() == 1
    clock.advance(3600)  # an hour of downtime: 60 ticks missed
    assert scheduler.tick() == 1
    assert scheduler.tick() == 0
    assert runs(sp) == 2


def test_skip_policy_drops_missed_ticks(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=600, name="s", missed="skip")
    def s() -> None: ...

    scheduler = Scheduler(sp)
    assert scheduler.tick() == 1  # 00:00:00, seen at 00:00:10
    clock.advance(3600 + 100)  # 01:01:50: the 01:00 tick is 110 s late
    assert scheduler.tick() == 0
    clock.advance(495)  # 01:10:05
    assert scheduler.tick() == 1


def test_clock_forward_one_hour_fires_one_catch_up_not_sixty(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=60, name="f")
    def f() -> None: ...

    scheduler = Scheduler(sp)
    scheduler.tick()
    clock.jump(3600)
    assert scheduler.tick() == 1
    assert scheduler.tick() == 0
    assert runs(sp) == 2


def test_clock_back_one_hour_does_not_stall_the_schedule(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=60, name="b")
    def b() -> None: ...

    scheduler = Scheduler(sp)
    clock.advance(3600)
    scheduler.tick()
    clock.jump(-3600)
    assert scheduler.tick() == 1  # the recorded tick is in the future: run, re-anchor
    assert scheduler.tick() == 0
    clock.advance(60)
    assert scheduler.tick() == 1  # and the schedule carries on every minute


def test_clock_back_after_a_history_of_runs_keeps_running(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=60, name="h")
    def h() -> None: ...

    scheduler = Scheduler(sp)
    for _ in range(120):  # two hours of runs, all succeeded
        scheduler.tick()
        sp.drain()
        clock.advance(60)
    before = runs(sp)
    clock.jump(-3600)
    for _ in range(60):  # the replayed hour still runs once a minute
        scheduler.tick()
        sp.drain()
        clock.advance(60)
    assert runs(sp) - before == 60


def test_two_schedulers_share_each_tick(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(every=10, name="shared")
    def shared() -> None: ...

    a, b = Scheduler(sp), Scheduler(sp)
    total = 0
    for _ in range(20):
        total += a.tick() + b.tick()
        clock.advance(10)
    assert total == 20
    assert runs(sp) == 20


def test_cron_in_a_time_zone(sp: Spooler, clock: FakeClock) -> None:
    @sp.periodic(cron="0 9 * * mon", tz="Europe/Paris", name="weekly")
    def weekly() -> None: ...

    schedule = sp.schedules["weekly"]
    nxt = datetime.fromtimestamp(schedule.next_tick(clock.now()), UTC)
    assert nxt == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # 09:00 in Paris, winter time
    assert "Monday" in schedule.describe() and "Europe/Paris" in schedule.describe()
    assert sp.schedules["weekly"].latest_tick(nxt.timestamp()) == nxt.timestamp()


def test_schedule_descriptions(sp: Spooler) -> None:
    @sp.periodic(every=timedelta(minutes=5), name="five")
    def five() -> None: ...

    assert sp.schedules["five"].describe() == "every 5 minutes"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"cron": "* * * * *", "every": 5}, {"every": 0}, {"cron": "not cron"},
     {"every": 5, "tz": "Mars/Olympus"}, {"every": 5, "missed": "all"}],
)
def test_bad_schedules_are_refused(sp: Spooler, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):

        @sp.periodic(name="bad", **kwargs)  # type: ignore[arg-type]
        def bad() -> None: ...


def test_rates_parse() -> None:
    assert parse_rate("100/m") == (100, 60.0)
    assert parse_rate("3/10s") == (3, 10.0)
    assert parse_rate("5/h") == (5, 3600.0)
    with pytest.raises(ConfigurationError):
        parse_rate("fast")


def test_concurrency_limit_is_passed_to_claim(sp: Spooler) -> None:
    @sp.task(name="limited", concurrency=1, rate="10/m")
    def limited() -> None: ...

    limited.spool()
    limited.spool()
    worker = sp.worker()
    assert worker.limits["limited"].concurrency == 1 and worker.limits["limited"].rate == 10
    (first,) = sp.backend.claim(["default"], worker_id="x", now=sp.clock.now(), lease=30,
                                limits=worker.limits)
    assert worker.run_once() is None  # the other job waits for the running one
    assert first.task == "limited"
