"""The public API at the call site: what .spool() accepts, refuses and stores."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from spoolhouse import (
    ConfigurationError,
    FakeClock,
    JobFailed,
    PayloadTooLarge,
    SerializationError,
    Spooler,
    UnknownTask,
    signals,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def sp(clock: FakeClock) -> Spooler:
    return Spooler("memory://", clock=clock)


def test_plain_call_runs_inline_and_spool_stores_a_pending_job(sp: Spooler) -> None:
    @sp.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    job = add.spool(2, b=3)
    info = job.info()
    assert info.task == "add" and info.queue == "default" and info.attempt == 0
    assert job.status() == "pending"
    assert sp.drain() == 1
    assert job.status() == "succeeded"
    assert job.result(timeout=1) == 5


def test_task_parameters_named_like_options_are_plain_arguments(sp: Spooler) -> None:
    @sp.task(name="odd")
    def odd(at: str, delay: int, queue: str, key: str) -> str:
        return f"{at}/{delay}/{queue}/{key}"

    job = odd.spool("x", delay=5, queue="q", key="k")
    assert job.info().queue == "default"  # queue= went to the function
    assert job.status() == "pending"  # delay= did not delay the job
    sp.drain()
    assert job.result(timeout=1) == "x/5/q/k"


def test_options_set_queue_priority_key_retries_timeout_and_delay(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> None:
        return None

    job = t.options(queue="mail", priority=7, retries=5, timeout=9, delay=60).spool()
    info = job.info()
    assert (info.queue, info.priority, info.max_attempts, info.timeout) == ("mail", 7, 6, 9.0)
    assert info.run_at == clock.now() + 60
    assert job.status() == "scheduled"
    later = datetime.fromtimestamp(clock.now() + 3600, UTC)
    assert t.options(at=later).spool().info().run_at == clock.now() + 3600
    assert t.options(delay=timedelta(minutes=2)).spool().info().run_at == clock.now() + 120


def test_at_in_another_timezone_is_the_same_instant(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    tz = timezone(timedelta(hours=-5))
    when = datetime.fromtimestamp(clock.now() + 90, tz)
    assert t.options(at=when).spool().info().run_at == clock.now() + 90


@pytest.mark.parametrize(
    ("opts", "error", "words"),
    [
        ({"at": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
        ({"at": "2030-01-01"}, TypeError, "aware datetime"),
        ({"at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5}, TypeError, "not both"),
        ({"delay": -1}, ValueError, ">= 0"),
        ({"delay": math.nan}, ValueError, "finite"),
        ({"delay": math.inf}, ValueError, "finite"),
        ({"delay": 10**12}, ValueError, "100 years"),
        ({"delay": True}, TypeError, "seconds"),
        ({"at": datetime(1900, 1, 1, tzinfo=UTC)}, ValueError, "before 1970"),
        ({"at": datetime(9999, 12, 31, tzinfo=UTC)}, ValueError, "100 years"),
        ({"priority": "high"}, TypeError, "priority"),
        ({"queue": ""}, ValueError, "queue"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"retries": -1}, ValueError, "retries"),
        ({"key": ""}, ValueError, "key"),
    ],
)
def test_bad_options_raise_at_the_call_site_and_store_nothing(
    sp: Spooler, opts: dict[str, object], error: type[Exception], words: str
) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    with pytest.raises(error, match=words):
        t.options(**opts).spool()  # type: ignore[arg-type]
    assert sp.backend.counts() == {}


def test_unknown_option_is_refused(sp: Spooler) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    with pytest.raises(TypeError, match="colour"):
        t.options(colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown option"):
        t.options(delay=1).options(colour="red")


def test_arguments_that_do_not_fit_the_signature_are_refused(sp: Spooler) -> None:
    @sp.task(name="t")
    def t(a: int) -> None: ...

    with pytest.raises(TypeError, match="t.spool"):
        t.spool(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing"):
        t.spool()  # type: ignore[call-arg]
    assert sp.backend.counts() == {}


def test_unserializable_argument_names_its_path(sp: Spooler) -> None:
    @sp.task(name="t")
    def t(user: dict[str, object]) -> None: ...

    with pytest.raises(SerializationError) as info:
        t.spool(user={"address": object()})
    assert "kwargs['user']['address']" in str(info.value)
    assert isinstance(info.value, TypeError)
    assert sp.backend.counts() == {}


def test_payload_over_the_limit_is_refused(clock: FakeClock) -> None:
    sp = Spooler("memory://", clock=clock, max_payload=1000)

    @sp.task(name="t")
    def t(blob: str) -> None: ...

    t.spool("x" * 900)
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        t.spool("x" * 1000)
    assert sum(sp.backend.counts()["default"].values()) == 1


def test_spooling_a_task_of_another_spooler_is_refused(sp: Spooler) -> None:
    other = Spooler("memory://")

    @other.task(name="t")
    def t() -> None: ...

    t.spooler = sp  # as if the task were spooled through the wrong spooler
    with pytest.raises(UnknownTask, match="@spooler.task"):
        t.spool()


def test_duplicate_task_names_are_refused(sp: Spooler) -> None:
    @sp.task(name="same")
    def a() -> None: ...

    with pytest.raises(ConfigurationError, match="name="):

        @sp.task(name="same")
        def b() -> None: ...


def test_tasks_defined_in_functions_need_a_name(sp: Spooler) -> None:
    def local() -> None: ...

    with pytest.raises(ConfigurationError, match="name="):
        sp.task(local)


def test_default_name_is_module_and_qualname(sp: Spooler) -> None:
    task = sp.task(_module_level)
    assert task.name == f"{__name__}._module_level"


def _module_level() -> None: ...


def test_spool_many_is_one_batch_and_refuses_all_on_one_bad_item(sp: Spooler) -> None:
    @sp.task(name="t")
    def t(a: int, b: int) -> int:
        return a * b

    handles = t.spool_many([(1, 2), (3, 4), (5, 6)])
    assert len({h.id for h in handles}) == 3
    with pytest.raises(TypeError, match="item 1"):
        t.spool_many([(1, 2), (1, object())])
    assert sum(sp.backend.counts()["default"].values()) == 3
    sp.drain()
    assert [h.result(timeout=1) for h in handles] == [2, 12, 30]


def test_spool_many_takes_the_batch_path_only_where_it_is_the_same(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SQLite stores a keyless batch without a Job per call; keyed batches and batches
    with job_spooled receivers go through enqueue_many, which answers per job."""
    sp = Spooler(f"sqlite:///{tmp_path / 'b.db'}", clock=clock)
    calls: list[str] = []
    backend = sp.backend
    for name in ("enqueue_batch", "enqueue_many"):
        real = getattr(backend, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(backend, name, spy)

    @sp.task(name="t")
    def t(a: int) -> int:
        return a

    try:
        handles = t.spool_many([(1,), (2,), ("x",)])
        assert calls == ["enqueue_batch"]
        assert [h.info().payload for h in handles] == [
            sp.serializer.dumps_call((v,), {}) for v in (1, 2, "x")
        ]
        calls.clear()
        keyed = t.options(key="once").spool_many([(1,), (2,)])
        assert calls == ["enqueue_many"] and keyed[0].id == keyed[1].id
        calls.clear()
        seen: list[str] = []

        def receiver(sender: Any, job: Any) -> None:
            seen.append(job.id)

        signals.job_spooled.connect(receiver)
        try:
            more = t.spool_many([(3,), (4,)])
        finally:
            signals.job_spooled.disconnect(receiver)
        assert calls == ["enqueue_many"] and seen == [h.id for h in more]
    finally:
        sp.close()


def test_unique_key_returns_the_live_job(sp: Spooler, clock: FakeClock) -> None:
    @sp.task(name="t")
    def t(n: int) -> int:
        return n

    first = t.options(key="welcome:42").spool(1)
    second = t.options(key="welcome:42").spool(2)
    assert first.id == second.id
    sp.drain()
    # a retried enqueue after success still finds the job while it is kept (result_ttl)
    assert t.options(key="welcome:42").spool(3).id == first.id
    clock.advance(86400 + 1)
    third = t.options(key="welcome:42").spool(3)
    assert third.id != first.id


def test_failed_job_frees_its_key(sp: Spooler) -> None:
    @sp.task(name="f", retries=0)
    def f() -> None:
        raise RuntimeError("x")

    first = f.options(key="k").spool()
    sp.drain()
    assert first.status() == "failed"
    assert f.options(key="k").spool().id != first.id


def test_result_raises_job_failed_with_the_remote_error(sp: Spooler) -> None:
    @sp.task(name="t", retries=0)
    def t() -> None:
        raise KeyError("missing thing")

    job = t.spool()
    sp.drain()
    with pytest.raises(JobFailed) as info:
        job.result(timeout=1)
    assert info.value.exc_type == "KeyError"
    assert "missing thing" in info.value.message
    assert "raise KeyError" in info.value.traceback


def test_result_times_out_when_nobody_runs_the_job(sp: Spooler) -> None:
    @sp.task(name="t")
    def t() -> None: ...

    with pytest.raises(TimeoutError, match="pending"):
        t.spool().result(timeout=0.05)


def test_cancel_pending_job_never_runs(sp: Spooler) -> None:
    ran = []

    @sp.task(name="t")
    def t() -> None:
        ran.append(1)

    job = t.spool()
    assert job.cancel() is True
    assert job.status() == "cancelled"
    assert sp.drain() == 0 and ran == []
    assert job.cancel() is False


def test_handle_from_id(sp: Spooler) -> None:
    @sp.task(name="t")
    def t() -> int:
        return 7

    job = t.spool()
    sp.drain()
    assert sp.job(job.id).result(timeout=1) == 7
    with pytest.raises(LookupError):
        sp.job("00000000-0000-7000-8000-000000000000").status()


def test_inline_mode_runs_on_spool_after_a_serialize_round_trip() -> None:
    sp = Spooler("inline://")
    seen: list[object] = []

    @sp.task(name="t")
    def t(value: object) -> object:
        seen.append(value)
        return value

    job = t.spool((1, 2))
    assert job.status() == "succeeded"
    assert seen == [(1, 2)]  # the tuple survived as a tuple, through JSON
    with pytest.raises(SerializationError):
        t.spool(object())


def test_heartbeat_must_be_shorter_than_lease() -> None:
    with pytest.raises(ConfigurationError, match="heartbeat"):
        Spooler("memory://", lease=5, heartbeat=5)


def test_unknown_url_names_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match="sqlite:///"):
        Spooler("mysql://x").backend  # noqa: B018
