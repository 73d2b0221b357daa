"""Serializer: exact round trips, refusals that name the argument, signing (R19, R21, R24)."""

from __future__ import annotations

import enum
import json
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spoolhouse import serializer as serializer_module
from spoolhouse.errors import ConfigurationError, PayloadTooLarge, SerializationError
from spoolhouse.serializer import (
    FORMAT_VERSION,
    BadSignature,
    JSONSerializer,
    PickleSerializer,
    Serializer,
    SignedSerializer,
    check_size,
)

KEY = b"k" * 32
JSON = JSONSerializer()


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down; floats bit for bit, datetimes with offset."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, datetime | time):
        return bool(a.utcoffset() == b.utcoffset() and a.isoformat() == b.isoformat())
    if isinstance(a, Decimal):
        return str(a) == str(b)  # NaN != NaN, and 1.0 == 1.00 though they differ
    return bool(a == b)


def call_round_trip(value: Any, serializer: Serializer = JSON) -> Any:
    args, kwargs = serializer.loads_call(serializer.dumps_call((value,), {"x": value}))
    assert len(args) == 1 and list(kwargs) == ["x"]
    assert same(args[0], kwargs["x"])
    return args[0]


def value_round_trip(value: Any, serializer: Serializer = JSON) -> Any:
    return serializer.loads_value(serializer.dumps_value(value))


# --------------------------------------------------------------------------- round trips

IST = timezone(timedelta(hours=5, minutes=30))
TINY = timezone(timedelta(microseconds=1))  # CPython 3.11's fromisoformat reads it as UTC
NEG_TINY = timezone(-timedelta(microseconds=250))
ODD = timezone(timedelta(hours=-3, minutes=-7, seconds=-15, microseconds=-5))

TAGGED = [
    pytest.param(datetime(2024, 3, 1, 12, 0, tzinfo=UTC), id="datetime-utc"),
    pytest.param(datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=IST), id="datetime-ist"),
    pytest.param(datetime(1, 1, 1, tzinfo=ODD), id="datetime-odd-offset-min"),
    pytest.param(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=ODD), id="datetime-max"),
    pytest.param(datetime(2000, 1, 1, tzinfo=TINY), id="datetime-subsecond-offset"),
    pytest.param(datetime(2000, 1, 1, tzinfo=NEG_TINY), id="datetime-neg-subsecond-offset"),
    pytest.param(time(1, tzinfo=TINY), id="time-subsecond-offset"),
    pytest.param(date(2024, 2, 29), id="date"),
    pytest.param(time(23, 59, 59, 999999), id="time-naive"),
    pytest.param(time(8, 30, tzinfo=IST), id="time-aware"),
    pytest.param(timedelta(days=-2, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(timedelta.max, id="timedelta-max"),
    pytest.param(UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(Decimal("1.10"), id="decimal-exponent"),
    pytest.param(Decimal("-0"), id="decimal-negative-zero"),
    pytest.param(Decimal("1E+400"), id="decimal-huge"),
    pytest.param(Decimal("NaN"), id="decimal-nan"),
    pytest.param(Decimal("-Infinity"), id="decimal-inf"),
    pytest.param(Decimal("sNaN"), id="decimal-snan"),
    pytest.param(b"", id="bytes-empty"),
    pytest.param(bytes(range(256)), id="bytes-all"),
    pytest.param((), id="tuple-empty"),
    pytest.param((1, "a", [2, (3,)]), id="tuple-nested"),
    pytest.param({1, "a", (2, 3), frozenset({4})}, id="set-with-tuple"),
    pytest.param(set(), id="set-empty"),
    pytest.param(frozenset({b"x", date(2020, 1, 1)}), id="frozenset"),
    pytest.param({1: "one", 2: "two"}, id="dict-int-keys"),
    pytest.param({(1, 2): [3], None: 0, True: 1.5, "s": "str too"}, id="dict-mixed-keys"),
    pytest.param({date(2020, 1, 1): {"nested": {3: 4}}}, id="dict-date-key"),
    pytest.param({"$dt": "2020-01-01"}, id="lookalike-dt"),
    pytest.param({"$esc": {"$set": []}}, id="lookalike-esc"),
    pytest.param({"$unknown": 1}, id="lookalike-unknown"),
    pytest.param({"$map": [[1, 2]], "other": 1}, id="lookalike-two-keys"),
    pytest.param({"v": 2, "a": [], "k": {}}, id="lookalike-envelope"),
    pytest.param({1: {"$tuple": [1]}}, id="lookalike-in-map"),
    pytest.param([{"$b64": "AA=="}], id="lookalike-in-list"),
    pytest.param("\ud800 lone surrogate", id="lone-surrogate"),
    pytest.param({"\udfff": "key surrogate"}, id="lone-surrogate-key"),
    pytest.param("naïve ☃ \u0000 \n", id="unicode-controls"),
    pytest.param(-0.0, id="negative-zero"),
    pytest.param(5e-324, id="subnormal"),
    pytest.param(2**63 - 1, id="int-max"),
    pytest.param(-(2**63), id="int-min"),
]


@pytest.mark.parametrize("value", TAGGED)
def test_round_trip_exact(value: Any) -> None:
    assert same(call_round_trip(value), value)
    assert same(value_round_trip(value), value)


def test_round_trip_everything_nested() -> None:
    hashable: Any = ("leaf", b"x", Decimal("1.5"))
    for depth in range(30):
        hashable = frozenset({(depth, hashable)}) if depth % 2 else (depth, hashable)
    value: Any = [p.values[0] for p in TAGGED] + [{hashable}, {hashable: hashable}]
    for depth in range(80):
        kind = depth % 4
        if kind == 0:
            value = [value, depth]
        elif kind == 1:
            value = {"level": depth, "items": (value,)}
        elif kind == 2:
            value = {depth: value, "$": {"$set": frozenset({(depth, b"x")})}}
        else:
            value = {"$esc": value}
    assert same(call_round_trip(value), value)
    assert same(value_round_trip(value), value)


def test_datetime_keeps_its_offset() -> None:
    dt = datetime(2024, 6, 1, 9, 0, tzinfo=IST)
    back = call_round_trip(dt)
    assert back.utcoffset() == timedelta(hours=5, minutes=30)
    assert back.isoformat() == "2024-06-01T09:00:00+05:30"


def test_zoneinfo_comes_back_as_fixed_offset() -> None:
    dt = datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    back = call_round_trip(dt)
    assert back == dt and back.utcoffset() == timedelta(hours=2)


def test_plain_json_stays_plain() -> None:
    value = {"user": [1, 2.5, None, True, "x"], "n": {"m": []}}
    data = JSON.dumps_call((value, "s"), {"flag": False})
    assert json.loads(data) == {"v": FORMAT_VERSION, "a": [value, "s"], "k": {"flag": False}}
    assert json.loads(JSON.dumps_value(value)) == {"v": FORMAT_VERSION, "r": value}


def test_payload_is_readable_utf8() -> None:
    data = JSON.dumps_call(("naïve ☃",), {})
    assert "naïve ☃".encode() in data
    assert data == b'{"v":1,"a":["na\xc3\xafve \xe2\x98\x83"],"k":{}}'


def test_args_and_kwargs_shapes() -> None:
    args, kwargs = JSON.loads_call(JSON.dumps_call([1, [2]], {"a": (3,), "$b": {"$c": 1}}))
    assert args == (1, [2]) and type(args) is tuple
    assert kwargs == {"a": (3,), "$b": {"$c": 1}} and type(kwargs) is dict
    assert JSON.loads_call(JSON.dumps_call((), {})) == ((), {})


def test_shared_reference_is_not_a_cycle() -> None:
    shared = [1, 2]
    back = call_round_trip([shared, shared, {"a": shared}])
    assert back == [[1, 2], [1, 2], {"a": [1, 2]}]


class Color(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


def test_scalar_subclasses_become_plain_values() -> None:
    back = call_round_trip({Color.RED: [Color.RED, Size.BIG], "n": Size.BIG})
    assert back == {"red": ["red", 3], "n": 3}
    assert type(back["n"]) is int and type(back["red"][0]) is str
    assert type(next(iter(back))) is str


def test_set_output_is_stable_across_hash_seeds() -> None:
    code = (
        "import sys; from spoolhouse.serializer import JSONSerializer\n"
        "sys.stdout.write(JSONSerializer().dumps_value("
        "{'set': {'a', 'b', 'c', 'd', ('x', 1), 7, b'z'}, 'fset': frozenset('qwerty')}).decode())"
    )
    outputs = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1, outputs


# --------------------------------------------------------------------------- refusals


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


@dataclass
class User:
    id: int


def _cycle_list() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


def _cycle_dict() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["me"] = {"again": loop}
    return loop


REFUSALS: list[tuple[str, Callable[[], tuple[tuple[Any, ...], dict[str, Any]]], str, str]] = [
    ("naive", lambda: ((datetime(2024, 1, 1),), {}), "args[0]", "timezone.utc"),
    ("nan", lambda: ((1, float("nan")), {}), "args[1]", "float nan"),
    ("inf", lambda: ((), {"x": [float("inf")]}), "kwargs['x'][0]", "float inf"),
    ("-inf", lambda: ((), {"x": (float("-inf"),)}), "kwargs['x'][0]", "float -inf"),
    ("bigint", lambda: ((2**70,), {}), "args[0]", "pass it as a str or a Decimal"),
    ("int64+1", lambda: ((2**63,), {}), "args[0]", "signed 64-bit"),
    ("int64-1", lambda: ((-(2**63) - 1,), {}), "args[0]", "signed 64-bit"),
    ("object", lambda: ((), {"user": Opaque()}), "kwargs['user']", "pass its id or a dict"),
    (
        "nested",
        lambda: ((), {"user": {"address": Opaque()}}),
        "kwargs['user']['address']",
        "test_serializer.Opaque",
    ),
    ("list-index", lambda: ((0, [0, 1, 2, User(1)]), {}), "args[1][3]", "User(id=1)"),
    ("function", lambda: ((len,), {}), "args[0]", "builtin_function_or_method"),
    ("lambda", lambda: (((lambda: 1),), {}), "args[0]", "not a supported type"),
    ("class", lambda: ((Opaque,), {}), "args[0]", "not a supported type"),
    ("bytearray", lambda: ((bytearray(b"x"),), {}), "args[0]", "bytearray"),
    ("complex", lambda: ((1j,), {}), "args[0]", "complex"),
    ("cycle-list", lambda: ((_cycle_list(),), {}), "args[0][1]", "circular reference"),
    ("cycle-dict", lambda: ((), {"d": _cycle_dict()}), "kwargs['d']['me']['again']", "circular"),
    ("set-item", lambda: (({1, float("nan")},), {}), "args[0]{nan}", "float nan"),
    ("tuple-item", lambda: (((1, 2, Opaque()),), {}), "args[0][2]", "Opaque()"),
    ("map-value", lambda: (({1: {"a": Opaque()}},), {}), "args[0][1]['a']", "Opaque()"),
    ("map-key", lambda: (({Opaque(): 1},), {}), "args[0][Opaque()]", "dict key"),
    (
        "deep-path",
        lambda: ((), {"a": [{"b": ({2: [datetime(2020, 1, 1)]},)}]}),
        "kwargs['a'][0]['b'][0][2][0]",
        "naive datetime",
    ),
    (
        "time-zoneinfo",
        lambda: ((time(1, tzinfo=ZoneInfo("Europe/Paris")),), {}),
        "args[0]",
        "fixed UTC offset",
    ),
]


@pytest.mark.parametrize(
    ("make", "path", "hint"),
    [pytest.param(make, path, hint, id=name) for name, make, path, hint in REFUSALS],
)
def test_refusal_names_the_path(
    make: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]], path: str, hint: str
) -> None:
    args, kwargs = make()
    with pytest.raises(SerializationError) as info:
        JSON.dumps_call(args, kwargs)
    assert info.value.path == path
    assert str(info.value).startswith(f"cannot serialize {path}: ")
    assert hint in str(info.value)
    assert isinstance(info.value, TypeError)  # R19: TypeError-family at the call site


def test_refusal_in_result_is_named_result() -> None:
    with pytest.raises(SerializationError) as info:
        JSON.dumps_value({"rows": [Opaque()]})
    assert info.value.path == "result['rows'][0]"


def test_too_deep_is_refused_cleanly() -> None:
    value: Any = 1
    for _ in range(sys.getrecursionlimit() * 2):
        value = [value]
    with pytest.raises(SerializationError, match="nested too deeply"):
        JSON.dumps_call((value,), {})
    with pytest.raises(SerializationError, match="nested too deeply"):
        JSON.loads_call(b'{"v":1,"a":' + b"[" * 100_000 + b"]" * 100_000 + b',"k":{}}')


# --------------------------------------------------------------------------- decoding garbage

GARBAGE = [
    pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b'{"v":1,"a":[1,', "not valid JSON", id="truncated"),
    pytest.param(b"[1, 2]", "no version", id="not-an-object"),
    pytest.param(b'{"a":[],"k":{}}', "no version", id="no-version"),
    pytest.param(b'{"v":2,"a":[],"k":{}}', "version 2", id="future-version"),
    pytest.param(b'{"v":true,"a":[],"k":{}}', "version True", id="bool-version"),
    pytest.param(b'{"v":1,"a":{},"k":{}}', "argument list", id="args-not-list"),
    pytest.param(b'{"v":1,"a":[NaN],"k":{}}', "NaN", id="nan-literal"),
    pytest.param(b'{"v":1,"a":[-Infinity],"k":{}}', "Infinity", id="inf-literal"),
    pytest.param(b'{"v":1,"a":[1e999],"k":{}}', "not finite", id="float-overflow"),
    pytest.param(b'{"v":1,"a":[9223372036854775808],"k":{}}', "64-bit", id="int-range"),
    pytest.param(b'{"v":1,"a":[' + b"9" * 5000 + b'],"k":{}}', "not valid JSON", id="int-digits"),
    pytest.param(b'{"v":1,"a":[{"$obj":"os.system"}],"k":{}}', "unknown tag", id="unknown-tag"),
    pytest.param(b'{"v":1,"a":[{"$dt":"2024-01-01T00:00:00"}],"k":{}}', "UTC offset", id="naive"),
    pytest.param(b'{"v":1,"a":[{"$dt":"yesterday"}],"k":{}}', "bad $dt", id="bad-iso"),
    pytest.param(b'{"v":1,"a":[{"$dt":5}],"k":{}}', "holding a int", id="tag-wrong-type"),
    pytest.param(b'{"v":1,"a":[{"$td":[1,2]}],"k":{}}', "$td", id="bad-td"),
    pytest.param(b'{"v":1,"a":[{"$td":[1e9,0,0]}],"k":{}}', "$td", id="td-float"),
    pytest.param(b'{"v":1,"a":[{"$dec":"abc"}],"k":{}}', "$dec", id="bad-decimal"),
    pytest.param(b'{"v":1,"a":[{"$uuid":"xyz"}],"k":{}}', "bad $uuid", id="bad-uuid"),
    pytest.param(b'{"v":1,"a":[{"$b64":"@@@"}],"k":{}}', "bad $b64", id="bad-b64"),
    pytest.param(b'{"v":1,"a":[{"$set":[[1]]}],"k":{}}', "unhashable", id="unhashable-set"),
    pytest.param(b'{"v":1,"a":[{"$map":[[[1],2]]}],"k":{}}', "unhashable", id="unhashable-key"),
    pytest.param(b'{"v":1,"a":[{"$map":[[1]]}],"k":{}}', "pair", id="bad-map-pair"),
    pytest.param(b'{"v":1,"a":[{"$esc":[1]}],"k":{}}', "$esc", id="bad-esc"),
]


@pytest.mark.parametrize(("data", "hint"), GARBAGE)
def test_garbage_is_a_serialization_error(data: bytes, hint: str) -> None:
    with pytest.raises(SerializationError) as info:
        JSON.loads_call(data)
    assert str(info.value).startswith("cannot decode call payload: ")
    assert hint in str(info.value)
    assert not isinstance(info.value, BadSignature)


def test_value_payload_is_not_a_call_payload() -> None:
    with pytest.raises(SerializationError, match="argument list"):
        JSON.loads_call(JSON.dumps_value([1]))
    with pytest.raises(SerializationError, match="no value"):
        JSON.loads_value(JSON.dumps_call((1,), {}))


# --------------------------------------------------------------------------- pickle bombs


class Bomb:
    """Unpickling this creates ``path``: proof that code from the payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_bomb_never_runs_under_json(tmp_path: Path, protocol: int) -> None:
    sentinel = tmp_path / "exploded"
    bomb = pickle.dumps(Bomb(sentinel), protocol=protocol)
    with pytest.raises(SerializationError):
        JSON.loads_call(bomb)
    with pytest.raises(SerializationError):
        JSON.loads_value(bomb)
    signed = SignedSerializer(PickleSerializer(), KEY)
    with pytest.raises(BadSignature):
        signed.loads_call(bomb)
    with pytest.raises(BadSignature):
        signed.loads_value(b"sh1:" + b"0" * 64 + b":" + bomb)
    assert not sentinel.exists()


def test_the_bomb_is_real(tmp_path: Path) -> None:
    """The control: the same payload does explode under the opt-in PickleSerializer."""
    sentinel = tmp_path / "exploded"
    PickleSerializer().loads_value(pickle.dumps(Bomb(sentinel)))
    assert sentinel.exists()


# --------------------------------------------------------------------------- signing


def test_signed_round_trip_and_readable() -> None:
    signed = SignedSerializer(JSON, KEY)
    data = signed.dumps_call((1, {"a": (2,)}), {"when": date(2024, 1, 1)})
    assert data.startswith(b"sh1:") and b'"a":[1,' in data
    assert signed.loads_call(data) == ((1, {"a": (2,)}), {"when": date(2024, 1, 1)})
    assert signed.loads_value(signed.dumps_value({1, 2})) == {1, 2}
    assert signed.name == "signed-json"


def test_flipping_any_byte_is_a_bad_signature() -> None:
    signed = SignedSerializer(JSON, KEY)
    for data, loads in (
        (signed.dumps_call(("x", 1), {"k": [None]}), signed.loads_call),
        (signed.dumps_value({"r": 1.5}), signed.loads_value),
    ):
        for index in range(len(data)):
            for mask in (0x01, 0x20, 0x80, 0xFF):
                tampered = bytearray(data)
                tampered[index] ^= mask
                with pytest.raises(BadSignature, match="bad signature"):
                    loads(bytes(tampered))
        for cut in (0, 1, 40, len(data) - 1):
            with pytest.raises(BadSignature):
                loads(data[:cut])
        with pytest.raises(BadSignature):
            loads(data + b" ")


def test_signature_binds_key_and_kind() -> None:
    signed = SignedSerializer(JSON, KEY)
    other = SignedSerializer(JSON, b"o" * 32)
    with pytest.raises(BadSignature):
        other.loads_call(signed.dumps_call((1,), {}))
    with pytest.raises(BadSignature):  # a stored result cannot pass as a call
        signed.loads_call(signed.dumps_value([[1], {}]))
    with pytest.raises(BadSignature, match="not signed"):
        signed.loads_call(JSON.dumps_call((1,), {}))


def test_bad_signature_is_a_serialization_error() -> None:
    assert issubclass(BadSignature, SerializationError)
    assert issubclass(BadSignature, TypeError)


def test_key_rotation() -> None:
    old = SignedSerializer(JSON, b"o" * 32)
    new = SignedSerializer(JSON, b"n" * 32, previous_keys=[b"o" * 32])
    assert new.loads_call(old.dumps_call((1,), {})) == ((1,), {})
    with pytest.raises(BadSignature):
        old.loads_call(new.dumps_call((1,), {}))


@pytest.mark.parametrize("key", [b"", b"short", "a str key of enough length"])
def test_weak_key_is_a_configuration_error(key: Any) -> None:
    with pytest.raises(ConfigurationError, match="token_bytes"):
        SignedSerializer(JSON, key)


def test_signed_garbage_inside_is_a_plain_serialization_error() -> None:
    signed = SignedSerializer(JSON, KEY)
    data = signed.sign(b"not json", context="call")
    with pytest.raises(SerializationError) as info:
        signed.loads_call(data)
    assert not isinstance(info.value, BadSignature)


# --------------------------------------------------------------------------- pickle, size, protocol


def test_pickle_round_trip_and_path() -> None:
    serializer = PickleSerializer()
    assert serializer.loads_call(serializer.dumps_call((User(1),), {"u": Opaque})) == (
        (User(1),),
        {"u": Opaque},
    )
    assert value_round_trip(User(2), serializer) == User(2)
    with pytest.raises(SerializationError) as info:
        serializer.dumps_call((1,), {"f": lambda: 1})
    assert info.value.path == "kwargs['f']"
    with pytest.raises(SerializationError, match="cannot unpickle"):
        serializer.loads_value(b"garbage")
    with pytest.raises(SerializationError, match="not an"):
        serializer.loads_call(pickle.dumps([1]))


def test_check_size() -> None:
    limit = 256 * 1024
    check_size(b"x" * (limit - 1), limit)
    check_size(b"x" * limit, limit)
    with pytest.raises(PayloadTooLarge) as info:
        check_size(b"x" * (limit + 1), limit)
    assert (info.value.size, info.value.limit) == (limit + 1, limit)
    with pytest.raises(PayloadTooLarge):
        check_size(b"x" * (10 * 1024 * 1024), limit)


def test_all_are_serializers() -> None:
    for serializer in (JSON, PickleSerializer(), SignedSerializer(JSON, KEY)):
        assert isinstance(serializer, Serializer)


# --------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_keys = st.text() | st.sampled_from(["$dt", "$esc", "$set", "$map", "$", "v", "a", "k", "r"])
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_keys, inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=1000, deadline=None)
@given(json_values)
def test_property_every_json_value_round_trips(value: Any) -> None:
    """R19: the task receives exactly v (floats bit-identical) for every JSON value v."""
    args, kwargs = JSON.loads_call(JSON.dumps_call((value,), {"x": value}))
    assert same(args[0], value)
    assert same(kwargs["x"], value)
    assert same(JSON.loads_value(JSON.dumps_value(value)), value)


fixed_zones = st.builds(
    timezone,
    st.timedeltas(
        min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)
    ),
)
hashable_scalars = (
    json_scalars
    | st.dates()
    | st.uuids()
    | st.binary(max_size=20)
    | st.decimals(allow_nan=False)
    | st.timedeltas()
    | st.datetimes(timezones=fixed_zones)
)
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
tagged_scalars = (
    hashable_scalars
    | st.decimals()
    | st.times(timezones=st.none() | fixed_zones)
    | st.datetimes(timezones=st.timezones())
)
mixed_values = st.recursive(
    tagged_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(json_keys, inner, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.frozensets(hashables, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(mixed_values)
def test_property_tagged_values_round_trip(value: Any) -> None:
    assert same(call_round_trip(value), value)
    assert same(value_round_trip(value), value)
    signed = SignedSerializer(JSON, KEY)
    assert same(value_round_trip(value, signed), value)


# --------------------------------------------------------------------------- scalar fast path


@settings(max_examples=1000, deadline=None)
@given(st.lists(json_scalars | st.integers() | st.floats(), max_size=6))
def test_the_scalar_fast_path_writes_what_the_walk_writes(values: list[Any]) -> None:
    """Positional plain scalars skip the walk; the bytes must be the walk's, or no answer."""
    args = tuple(values)
    fast = serializer_module._scalar_call(args)
    try:
        walked = serializer_module._walked_call(args, {})
    except SerializationError:
        assert fast is None  # out-of-range int, NaN, infinity: the walk explains
        return
    if fast is None:
        # only a lone surrogate, which the walk escapes, has no fast answer
        assert any(type(v) is str and not _utf8_ok(v) for v in args)
    else:
        assert fast == walked
    assert JSON.dumps_call(args, {}) == walked


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("args", [("\ud800",), ("a\udfffb", 1), (1, "x", "\udc80")])
def test_a_lone_surrogate_leaves_the_fast_path_and_round_trips(args: tuple[Any, ...]) -> None:
    """No UTF-8 form: the fast path declines, and the walk's \\u escapes keep it exact."""
    assert serializer_module._scalar_call(args) is None
    payload = JSON.dumps_call(args, {})
    payload.decode("utf-8")  # valid UTF-8, so a worker can decode it
    assert JSON.loads_call(payload) == (args, {})


@pytest.mark.parametrize(
    "args",
    [(Size.BIG,), (Color.RED,), (b"x",), ([1],), ({"a": 1},), ((1,),), (Decimal("1"),), (True, None, object())],
)
def test_the_scalar_fast_path_leaves_other_values_to_the_walk(args: tuple[Any, ...]) -> None:
    assert serializer_module._scalar_call(args) is None
