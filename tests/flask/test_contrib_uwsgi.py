"""``spoolhouse.contrib.uwsgi``: the seed's uWSGI spooler API on Spoolhouse."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spoolhouse import ConfigurationError, FakeClock, JobFailed, Spooler
from spoolhouse.contrib import uwsgi
from spoolhouse.contrib.uwsgi import (
    SPOOL_IGNORE,
    SPOOL_OK,
    SPOOL_RETRY,
    RetryTaskException,
    TaskExecutor,
    spool,
    spoolforever,
    spoolraw,
    task,
)
from spoolhouse.worker import Worker


@pytest.fixture
def sp(clock: FakeClock) -> Iterator[Spooler]:
    s = Spooler("memory://", clock=clock)
    yield s
    s.close()


def test_codes_have_uwsgis_values_and_the_module_reads_like_uwsgi() -> None:
    assert (uwsgi.SPOOL_OK, uwsgi.SPOOL_RETRY, uwsgi.SPOOL_IGNORE) == (-2, -1, 0)
    assert isinstance(uwsgi.spooler, Spooler)


def test_the_seeds_bytes_dict_reaches_the_function_as_str(sp: Spooler) -> None:
    received: list[dict[str, Any]] = []

    @spool(name="seed_task", spooler=sp)
    def spool_task(args: dict[str, Any]) -> int:
        received.append(args)
        assert int(args["duration"]) == 5  # the seed's own line
        return uwsgi.SPOOL_OK

    job = spool_task.spool({b"duration": b"5", b"name": "caf\u00e9".encode()})
    assert job.status() == "pending"
    assert sp.drain() == 1
    assert job.status() == "succeeded"
    assert received == [{"duration": "5", "name": "caf\u00e9"}]


def test_calling_the_decorated_function_spools_like_uwsgi(sp: Spooler) -> None:
    received: list[dict[str, Any]] = []

    @spool(name="call_spools", spooler=sp)
    def f(args: dict[str, Any]) -> None:
        received.append(args)

    f(duration=5, ratio=0.5)  # uWSGI >= 1.9.13: calling is spooling
    f.spool({"a": "1"}, b=2)  # a dict and keywords together
    assert received == []  # nothing ran here
    assert sp.drain() == 2
    assert sorted(received, key=sorted) == [{"a": "1", "b": "2"},
                                            {"duration": "5", "ratio": "0.5"}]
    f.fn({"direct": "call"})  # the function itself
    assert received[-1] == {"direct": "call"}


def test_non_utf8_bytes_stay_bytes(sp: Spooler) -> None:
    received: list[dict[str, Any]] = []

    @spool(name="raw_bytes", spooler=sp)
    def f(args: dict[str, Any]) -> None:
        received.append(args)

    f.spool({b"blob": b"\xff\x00"})
    sp.drain()
    assert received == [{"blob": b"\xff\x00"}]


def test_at_in_the_dict_is_when_to_run_not_an_argument(sp: Spooler, clock: FakeClock) -> None:
    received: list[dict[str, Any]] = []

    @spool(name="at_task", spooler=sp)
    def f(args: dict[str, Any]) -> None:
        received.append(args)

    at = int(clock.now()) + 3
    job = f.spool({b"duration": b"5", b"at": str(at).encode()})
    assert job.info().run_at == at
    assert job.status() == "scheduled"
    assert sp.drain() == 0
    clock.advance(3)
    assert sp.drain() == 1
    assert received == [{"duration": "5"}]


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(lambda now: now + 60, id="float"),
        pytest.param(lambda now: str(int(now) + 60), id="str"),
        pytest.param(lambda now: datetime.fromtimestamp(now + 60, UTC), id="aware"),
        pytest.param(lambda now: datetime.fromtimestamp(now + 60, UTC).replace(tzinfo=None),
                     id="naive-utc"),
        pytest.param(lambda now: timedelta(seconds=60), id="timedelta"),
    ],
)
def test_at_takes_unix_time_datetimes_and_timedeltas(sp: Spooler, clock: FakeClock,
                                                     at: Any) -> None:
    @spool(name="at_kinds", spooler=sp)
    def f(args: dict[str, Any]) -> None: ...

    job = f.spool(at=at(clock.now()))
    assert abs(job.info().run_at - (clock.now() + 60)) < 1.0


def test_priority_maps_lower_uwsgi_numbers_to_sooner(sp: Spooler) -> None:
    order: list[str] = []

    @spool(name="prio", spooler=sp)
    def f(args: dict[str, Any]) -> None:
        order.append(args["n"])

    f.spool({b"n": b"late", b"priority": b"9"})
    f.spool({b"n": b"plain"})
    f.spool({b"n": b"first", b"priority": b"1"})
    assert sp.drain() == 3
    assert order == ["plain", "first", "late"]


def test_spool_retry_is_counted_with_backoff_and_ends_failed(sp: Spooler,
                                                             clock: FakeClock) -> None:
    runs: list[int] = []

    @spool(name="always_retry", spooler=sp, retries=2, backoff=10.0)
    def f(args: dict[str, Any]) -> int:
        runs.append(1)
        return uwsgi.SPOOL_RETRY

    job = f.spool(x=1)
    assert sp.drain() == 1
    assert job.status() == "retrying"
    assert sp.drain() == 0  # backoff: not due yet
    clock.advance(60)
    assert sp.drain() == 1
    clock.advance(60)
    assert sp.drain() == 1
    assert len(runs) == 3
    info = job.info()
    assert job.status() == "failed" and info.attempt == info.max_attempts == 3
    assert job.error["reason"] == "retry" and "SPOOL_RETRY" in job.error["message"]
    with pytest.raises(JobFailed):
        job.result(timeout=0)


def test_spool_ignore_skips_and_ok_or_none_succeed(sp: Spooler) -> None:
    @spoolraw(name="codes", spooler=sp)
    def f(args: dict[str, Any]) -> Any:
        return {"ok": SPOOL_OK, "ignore": SPOOL_IGNORE, "none": None, "other": "x"}[args["c"]]

    jobs = [f.spool(c=c) for c in ("ok", "ignore", "none", "other")]
    assert sp.drain() == 4
    assert [j.status() for j in jobs] == ["succeeded"] * 4


def test_exceptions_retry_then_fail(sp: Spooler, clock: FakeClock) -> None:
    @spool(name="raises", spooler=sp, retries=1, backoff=1.0)
    def f(args: dict[str, Any]) -> None:
        raise OSError("disk")

    job = f.spool()
    sp.drain()
    clock.advance(10)
    sp.drain()
    assert job.status() == "failed" and job.error["type"] == "OSError"


def test_spoolforever_runs_again_after_each_run_until_ignored(sp: Spooler,
                                                              clock: FakeClock) -> None:
    runs: list[float] = []

    @spoolforever(name="forever", spooler=sp, interval=30.0)
    def f(args: dict[str, Any]) -> int | None:
        runs.append(clock.now())
        return SPOOL_IGNORE if len(runs) == 4 else None

    job = f.spool()
    for _ in range(3):
        assert sp.drain() == 1
        assert job.status() == "scheduled" and sp.drain() == 0
        clock.advance(30)
    assert sp.drain() == 1
    assert job.status() == "succeeded"
    assert [r - runs[0] for r in runs] == [0.0, 30.0, 60.0, 90.0]
    assert job.info().attempt == 1  # the re-runs are not failures


def test_pass_arguments_passes_the_call_and_takes_out_the_options(sp: Spooler,
                                                                  clock: FakeClock) -> None:
    calls: list[tuple[Any, ...]] = []

    @spool(pass_arguments=True, name="passed", spooler=sp)
    def f(a: int, b: list[int], *, c: str = "") -> None:
        calls.append((a, b, c))

    job = f.spool(1, [2, 3], c="x", at=clock.now() + 5, priority=2)
    info = job.info()
    assert info.run_at == clock.now() + 5 and info.priority == -2
    clock.advance(5)
    sp.drain()
    assert calls == [(1, [2, 3], "x")]
    with pytest.raises(TypeError, match="passed.spool"):
        f.spool(1, 2, 3, 4)  # checked at the call site, nothing stored


def test_refused_arguments_name_the_fix(sp: Spooler) -> None:
    @spool(name="strict", spooler=sp)
    def f(args: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match=r"pass_arguments=True"):
        f.spool(items=[1, 2])
    with pytest.raises(TypeError, match="one dict of arguments"):
        f.spool({"a": "1"}, {"b": "2"})
    with pytest.raises(TypeError, match="takes a dict"):
        f.spool("duration=5")
    with pytest.raises(TypeError, match="at= takes a number"):
        f.spool(at="soon")
    assert sp.backend.counts() == {}


def test_timer_and_cron_become_periodic_tasks(clock: FakeClock) -> None:
    from spoolhouse.worker.scheduler import Scheduler

    sp = Spooler("memory://", clock=clock)
    calls: list[tuple[str, int]] = []

    @uwsgi.timer(30, target="spooler", spooler=sp, signum=7)
    def tick(signum: int) -> None:
        calls.append(("timer", signum))

    @uwsgi.cron(-5, -1, -1, -1, -1, spooler=sp)
    def every_five_minutes(signum: int) -> None:
        calls.append(("cron", signum))

    @uwsgi.rbtimer(60, spooler=sp)
    def rb(signum: int) -> None:
        calls.append(("rb", signum))

    tick(1)  # still a plain function
    assert calls == [("timer", 1)]
    calls.clear()
    by_name = {name.split(".")[-1]: s for name, s in sp.schedules.items()}
    assert by_name["tick"].every == 30
    assert by_name["every_five_minutes"].cron == "*/5 * * * *"
    scheduler = Scheduler(sp)
    for _ in range(10):
        scheduler.tick()
        sp.drain()
        clock.advance(30)
    assert calls.count(("timer", 7)) >= 9
    assert ("rb", 0) in calls


def test_cron_refuses_values_cron_never_had(sp: Spooler) -> None:
    with pytest.raises(ConfigurationError, match="cron"):
        uwsgi.cron(99, -1, -1, -1, -1, spooler=sp)(lambda signum: None)
    assert sp.schedules == {}


def test_thread_runs_on_the_bounded_pool(sp: Spooler) -> None:
    @uwsgi.thread(spooler=sp)
    def work(x: int) -> int:
        return x + 1

    future = work(1)
    assert isinstance(future, Future) and future.result(timeout=10) == 2
    work.shutdown()


# -- uwsgi_tasks ---------------------------------------------------------------------------------
def test_task_retry_count_counts_runs_and_retry_timeout_spaces_them(sp: Spooler,
                                                                    clock: FakeClock) -> None:
    runs: list[float] = []

    @task(retry_count=3, retry_timeout=5, name="ut_retry", spooler=sp)
    def flaky(x: int) -> int:
        runs.append(clock.now())
        return SPOOL_RETRY

    job = flaky(7)
    assert job is not None and job.info().max_attempts == 3
    for _ in range(3):
        sp.drain()
        clock.advance(5)
    assert [r - runs[0] for r in runs] == [0.0, 5.0, 10.0]
    assert job.status() == "failed"


def test_task_at_runtime_executor_and_retry_exception(sp: Spooler, clock: FakeClock) -> None:
    seen: list[str] = []

    @task(at=timedelta(seconds=30), name="ut_later", spooler=sp)
    def later(word: str) -> None:
        seen.append(word)

    job = later("hi")
    assert job is not None and job.info().run_at == clock.now() + 30

    @task(executor=TaskExecutor.RUNTIME, name="ut_now", spooler=sp)
    def now(word: str) -> None:
        seen.append(word)

    assert now("here") is None and seen == ["here"]

    @task(retry_count=2, name="ut_raise", spooler=sp)
    def again() -> None:
        raise RetryTaskException(timeout=7)

    job = again()
    assert job is not None
    sp.drain()
    assert job.info().run_at == clock.now() + 7
    with pytest.raises(TypeError, match="retry_count must be an int"):
        task(retry_count="3", spooler=sp)(print)  # type: ignore[arg-type]


# -- the module-level spooler -----------------------------------------------------------------
def test_configure_points_the_module_spooler_elsewhere(tmp_path: Path) -> None:
    before = uwsgi.spooler.url
    try:
        uwsgi.configure(f"sqlite:///{tmp_path}/compat.db")
        assert uwsgi.spooler.url == f"sqlite:///{tmp_path}/compat.db"
    finally:
        uwsgi.configure(before)


def test_spoolhouse_import_imports_the_task_modules(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shcompat_tasks_a.py").write_text("LOADED = True\n")
    (tmp_path / "shcompat_tasks_b.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SPOOLHOUSE_IMPORT", "shcompat_tasks_a, shcompat_tasks_b")
    try:
        uwsgi._import_spooler_modules()
        assert sys.modules["shcompat_tasks_a"].LOADED and sys.modules["shcompat_tasks_b"].LOADED
    finally:
        sys.modules.pop("shcompat_tasks_a", None)
        sys.modules.pop("shcompat_tasks_b", None)


# -- the seed's own app.py and tasks.py -----------------------------------------------------------
def test_the_seeds_app_runs_on_the_compat_layer(seed_example: dict[str, ModuleType],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    app = seed_example["app"].app
    spooler = uwsgi.spooler
    client = app.test_client()
    body = client.get("/").get_json()
    assert body["started"] is True and body["thread_name"].startswith("Thread")
    assert client.get("/uwsgi_thread").get_json() == {"started": True}

    before = {j.id for j in spooler.backend.list_jobs(task="tasks.spool_task")}
    asked = spooler.clock.now()
    assert client.get("/uwsgi_spool").get_json() == {"started": True}
    [job] = [j for j in spooler.backend.list_jobs(task="tasks.spool_task") if j.id not in before]
    assert int(asked) + 3 <= job.run_at <= asked + 3  # at = int(time.time()) + 3
    assert json.loads(job.payload)  # JSON, never pickle
    worker = Worker(spooler, queues=["default"])
    assert worker.run_once(now=job.run_at - 0.5) is None  # not before `at`
    ran = worker.run_once(now=job.run_at)
    assert ran is not None and ran.id == job.id
    assert spooler.job(job.id).status() == "succeeded"
    out = capsys.readouterr().out
    assert "Working in uwsgi spool... 5/5" in out
