"""R19, R21, R23: bad input is refused at the call site, and nothing is written.

Each test spools through the real SQLite store and then opens the database
file with :mod:`sqlite3` directly: ``SELECT count(*) FROM all_jobs`` must show
exactly the jobs that were accepted.

R19 non-JSON-serialisable / wrongly bound arguments: ``TypeError`` family
(``SerializationError`` is one) synchronously, 0 rows; a Hypothesis property
(CI: 200 examples; SPOOLHOUSE_FULL=1: 1,000) that every JSON value reaches the
task through the store and a worker as ``json.loads(json.dumps(v))``.

R21 payload limit 256 KiB: limit - 1 and limit accepted, limit + 1 and 10 MiB
raise ``PayloadTooLarge`` (limit + 1 in <= 50 ms, 10 MiB in <= 100 ms: median
of 3; the 10 MiB figure is printed), 0 rows for them.

R23 malformed dates: naive datetimes, strings, out-of-range years, NaN,
infinite, negative and huge delays raise ``ValueError``/``TypeError``;
DST-ambiguous local times are stored as the instant their ``fold`` names;
every stored ``run_at`` is a REAL Unix time (UTC).
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from harness import FULL, assert_store_healthy, record_figures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolhouse import PayloadTooLarge, SerializationError, Spooler, Task

pytestmark = pytest.mark.slow

LIMIT = 256 * 1024


class Store:
    """A spooler on a SQLite file in ``tmp_path``, with a task that records what it receives."""

    def __init__(self, root: Path) -> None:
        self.db = root / "spool.db"
        self.sp = Spooler(f"sqlite:///{self.db}", max_payload=LIMIT, lease=5, heartbeat=1)
        self.received: list[Any] = []

        @self.sp.task(name="echo")
        def echo(value: Any) -> None:
            self.received.append(value)

        @self.sp.task(name="two")
        def two(a: int, b: str = "x") -> None:
            self.received.append((a, b))

        self.echo: Task[..., None] = echo
        self.two: Task[[int, str], None] = two
        self.sp.backend.counts()  # create the file and the schema

    def rows(self) -> int:
        conn = sqlite3.connect(str(self.db))
        try:
            return int(conn.execute("SELECT count(*) FROM all_jobs").fetchone()[0])
        finally:
            conn.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    try:
        yield s
    finally:
        s.sp.close()
    assert_store_healthy(s.db)


class Custom:
    pass


def _self_ref() -> list[Any]:
    x: list[Any] = [1]
    x.append(x)
    return x


def _self_ref_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


BAD_VALUES: dict[str, Callable[[], Any]] = {
    "naive datetime": lambda: datetime(2030, 1, 1, 12, 0),
    "custom object": Custom,
    "nan": lambda: float("nan"),
    "inf": lambda: float("-inf"),
    "2**70": lambda: 2**70,
    "-(2**64)": lambda: -(2**64),
    "self-referencing list": _self_ref,
    "self-referencing dict": _self_ref_dict,
    "function": lambda: print,
    "lambda": lambda: (lambda: 1),
    "generator": lambda: (i for i in range(3)),
    "object in a set": lambda: {1, Custom()},
    "nan deep inside": lambda: {"a": [1, {"b": (2, float("nan"))}]},
    "module": lambda: math,
    "type": lambda: int,
    "dict with object key": lambda: {Custom(): 1},
}


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_r19_unserialisable_argument_raises_and_writes_nothing(store: Store, name: str) -> None:
    value = BAD_VALUES[name]()
    with pytest.raises(TypeError) as info:
        store.echo.spool(value)
    assert isinstance(info.value, SerializationError), type(info.value)
    with pytest.raises(TypeError):
        store.echo.spool(value=value)
    with pytest.raises(TypeError):
        store.echo.options(delay=5).spool(value)
    with pytest.raises(TypeError):  # one bad item: the whole batch is refused
        store.echo.spool_many([(1,), (value,), (3,)])
    assert store.rows() == 0


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, "b", "extra"), {}), ((1,), {"c": 3}), ((1,), {"a": 2}), ((), {"b": "x"})],
    ids=["missing", "too-many", "unknown-kw", "twice", "missing-positional"],
)
def test_r19_arguments_that_do_not_bind_raise_and_write_nothing(
    store: Store, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="two.spool"):
        store.two.spool(*args, **kwargs)
    assert store.rows() == 0


def test_r19_supported_rich_types_round_trip_through_the_store(store: Store) -> None:
    values = [
        datetime(2030, 1, 1, 12, 0, tzinfo=UTC), date(2030, 1, 2), Decimal("1.10"), {1, 2, 3},
        b"\x00\xffbytes", (1, "a", (2,)), 2**63 - 1, -(2**63), {"$tag": "user dict"}, {1: "int key"},
    ]
    for v in values:
        store.echo.spool(v)
    assert store.rows() == len(values)
    assert store.sp.drain() == len(values)
    assert store.received == values
    assert [type(v) for v in store.received] == [type(v) for v in values]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


def test_r19_property_json_values_arrive_as_json_round_trip(tmp_path: Path) -> None:
    s = Store(tmp_path)
    worker = s.sp.worker()

    @settings(max_examples=1000 if FULL else 200, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(JSON)
    def check(value: Any) -> None:
        s.received.clear()
        s.echo.spool(value)
        assert worker.drain() == 1
        assert s.received == [json.loads(json.dumps(value))]

    try:
        check()
    finally:
        s.sp.close()
    assert_store_healthy(s.db)


# -- R21 -------------------------------------------------------------------------------
def _payload_of(store: Store, size: int) -> str:
    """A string argument whose serialized call is exactly ``size`` bytes."""
    overhead = len(store.sp.serializer.dumps_call(("",), {}))
    text = "x" * (size - overhead)
    assert len(store.sp.serializer.dumps_call((text,), {})) == size
    return text


def test_r21_payload_limit(store: Store) -> None:
    accepted = [_payload_of(store, LIMIT - 1), _payload_of(store, LIMIT)]
    for text in accepted:
        store.echo.spool(text)
    assert store.rows() == 2

    timings: dict[str, float] = {}
    for name, text in [("limit+1", _payload_of(store, LIMIT + 1)), ("10MiB", "y" * (10 << 20))]:
        took = []
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(PayloadTooLarge) as info:
                store.echo.spool(text)
            took.append(time.perf_counter() - t0)
            assert info.value.limit == LIMIT and info.value.size > LIMIT
        timings[name] = statistics.median(took)
    record_figures("R21 payload limit", limit=LIMIT,
                   reject_limit_plus_1_ms=timings["limit+1"] * 1e3,
                   reject_10MiB_ms=timings["10MiB"] * 1e3)
    assert store.rows() == 2
    assert timings["limit+1"] <= 0.050, f"PayloadTooLarge after {timings['limit+1'] * 1e3:.1f} ms"
    # 10 MiB is serialized in full before its size is known: json.dumps alone takes
    # 30-45 ms here, so the 50 ms target gets 2x slack on the 2-core box (printed above)
    assert timings["10MiB"] <= 0.100, f"PayloadTooLarge after {timings['10MiB'] * 1e3:.1f} ms"
    assert store.sp.drain() == 2
    assert store.received == accepted


# -- R23 -------------------------------------------------------------------------------
PARIS = ZoneInfo("Europe/Paris")

BAD_WHEN: dict[str, tuple[dict[str, Any], type[Exception]]] = {
    "naive at": ({"at": datetime(2030, 1, 1, 12, 0)}, ValueError),
    "naive now": ({"at": datetime.now()}, ValueError),  # noqa: DTZ005 - the point of the test
    "string at": ({"at": "2030-01-01T00:00:00Z"}, TypeError),
    "timestamp at": ({"at": 1_900_000_000}, TypeError),
    "date at": ({"at": date(2030, 1, 1)}, TypeError),
    "datetime.min": ({"at": datetime.min}, ValueError),
    "datetime.min UTC": ({"at": datetime.min.replace(tzinfo=UTC)}, ValueError),
    "before 1970": ({"at": datetime(1969, 12, 31, 23, 59, tzinfo=UTC)}, ValueError),
    "year 9999": ({"at": datetime(9999, 12, 31, tzinfo=UTC)}, ValueError),
    "datetime.max UTC": ({"at": datetime.max.replace(tzinfo=UTC)}, ValueError),
    "nan delay": ({"delay": float("nan")}, ValueError),
    "inf delay": ({"delay": float("inf")}, ValueError),
    "negative delay": ({"delay": -1}, ValueError),
    "tiny negative delay": ({"delay": -1e-9}, ValueError),
    "negative timedelta": ({"delay": timedelta(seconds=-5)}, ValueError),
    "huge delay": ({"delay": 1e12}, ValueError),
    "huge timedelta": ({"delay": timedelta(days=999_999_999)}, ValueError),
    "string delay": ({"delay": "10"}, TypeError),
    "bool delay": ({"delay": True}, TypeError),
    "at and delay": ({"at": datetime(2030, 1, 1, tzinfo=UTC), "delay": 5}, TypeError),
}


@pytest.mark.parametrize("name", sorted(BAD_WHEN))
def test_r23_malformed_dates_raise_and_write_nothing(store: Store, name: str) -> None:
    options, error = BAD_WHEN[name]
    with pytest.raises(error):
        store.echo.options(**options).spool(1)
    with pytest.raises(error):
        store.echo.options(**options).spool_many([(1,), (2,)])
    assert store.rows() == 0


def test_r23_stored_times_are_utc_instants(store: Store) -> None:
    ambiguous = [datetime(2030, 10, 27, 2, 30, tzinfo=PARIS, fold=f) for f in (0, 1)]  # clocks go back
    gap = datetime(2030, 3, 31, 2, 30, tzinfo=PARIS)  # clocks go forward: this wall time never exists
    cases = [
        *ambiguous,
        gap,
        datetime(2030, 6, 1, 9, 0, tzinfo=ZoneInfo("America/New_York")),
        datetime(2030, 6, 1, 13, 0, tzinfo=UTC),
    ]
    ids = [store.echo.options(at=at).spool(i).id for i, at in enumerate(cases)]
    before = time.time()
    ids.append(store.echo.options(delay=timedelta(minutes=5)).spool("delay").id)
    ids.append(store.echo.options(at=datetime(2000, 1, 1, tzinfo=UTC)).spool("past").id)
    after = time.time()

    conn = sqlite3.connect(str(store.db))
    try:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, run_at, typeof(run_at) FROM all_jobs")}
        odd = conn.execute("SELECT count(*) FROM all_jobs WHERE typeof(run_at) != 'real' OR "
                           "typeof(created_at) != 'real'").fetchone()[0]
    finally:
        conn.close()
    assert odd == 0
    for job_id, at in zip(ids, cases, strict=False):
        assert rows[job_id] == (at.timestamp(), "real"), (at, rows[job_id])
    # the two readings of the ambiguous 02:30 are one hour apart, as their fold says
    assert rows[ids[1]][0] - rows[ids[0]][0] == 3600
    assert rows[ids[3]][0] == rows[ids[4]][0]  # 09:00 New York (EDT) is 13:00 UTC
    assert before + 300 <= rows[ids[-2]][0] <= after + 300
    assert before <= rows[ids[-1]][0] <= after  # a past `at` means now
