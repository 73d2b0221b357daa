"""Turn a task call's arguments and a task's result into payload bytes and back.

:class:`JSONSerializer` is the default. Its payloads are UTF-8 JSON, readable
in a database shell or a Redis client::

    call:   {"v":1,"a":[<arg>, ...],"k":{"<name>":<arg>, ...}}
    value:  {"v":1,"r":<value>}

``v`` is the payload format version; a payload of an unknown version is
refused with :class:`~spoolhouse.errors.SerializationError` rather than
guessed at. Plain JSON values (``None``, ``bool``, ``int``, ``float``, ``str``,
``list``, ``dict`` with ``str`` keys) are stored as themselves. The other
supported types are stored as *tags*, a JSON object with exactly one key that
starts with ``$``:

.. code-block:: text

    {"$dt": "2024-05-01T09:30:00+02:00"}  aware datetime, ISO 8601 with its UTC offset
    {"$date": "2024-05-01"}               date
    {"$time": "09:30:00+02:00"}           time, with the offset if it has one
    {"$td": [days, seconds, micros]}      timedelta
    {"$uuid": "1b4e28ba-..."}             UUID
    {"$dec": "1.10"}                      Decimal as str(d): keeps exponent, NaN, Infinity
    {"$b64": "AP8="}                      bytes, standard base64
    {"$tuple": [...]}                     tuple
    {"$set": [...]}, {"$fset": [...]}     set, frozenset; elements sorted by their
                                          encoding, so the output does not depend on
                                          PYTHONHASHSEED
    {"$map": [[key, value], ...]}         dict with any key that is not a str; the keys
                                          keep their type (int, tuple, date...)
    {"$esc": {...}}                       a user dict whose only key starts with "$",
                                          which would otherwise read as a tag

A JSON object with more than one key, or whose only key does not start with
``$``, is always a plain dict. Decoding only ever builds the types above; an
unknown tag, invalid UTF-8 or invalid JSON raises ``SerializationError``.

What is refused at the call site, with the argument path in the message
(``kwargs['user']['address']``) and in ``SerializationError.path``: naive
datetimes, float NaN and infinities, ints outside the signed 64-bit range,
circular references and every other type. Subclasses of ``str``, ``int`` and
``float`` (``StrEnum`` and ``IntEnum`` members, for example) are stored as
their plain value and come back as plain ``str``/``int``/``float``. A zone
such as ``ZoneInfo("Europe/Paris")`` comes back as the fixed offset it had at
that instant. An object referenced twice comes back as two equal copies.

:class:`PickleSerializer` runs code from the store when decoding; use it only
by explicit opt-in. :class:`SignedSerializer` wraps either and refuses any
payload whose HMAC does not match, before the inner serializer sees it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Protocol, runtime_checkable
from uuid import UUID

from .errors import ConfigurationError, PayloadTooLarge, SerializationError

__all__ = [
    "FORMAT_VERSION",
    "BadSignature",
    "JSONSerializer",
    "PickleSerializer",
    "Serializer",
    "SignedSerializer",
    "check_size",
]

#: Version of the JSON payload layout written by this module.
FORMAT_VERSION = 1

_ZERO = timedelta(0)
_INT_MIN = -(2**63)
_INT_MAX = 2**63 - 1

_ADVICE = (
    "pass plain data (dict, list, str, int, float, bool, None) or one of the supported "
    "types (datetime, date, time, timedelta, UUID, Decimal, bytes, tuple, set, frozenset); "
    "for an object pass its id or a dict"
)


@runtime_checkable
class Serializer(Protocol):
    """Encodes task calls and results as bytes. Implementations must be thread-safe."""

    #: Short identifier, e.g. ``"json"``.
    name: str

    def dumps_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        """Encode a task call's arguments; raise ``SerializationError`` naming the bad one."""
        ...

    def loads_call(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode what :meth:`dumps_call` wrote; raise ``SerializationError`` if it cannot."""
        ...

    def dumps_value(self, value: Any) -> bytes:
        """Encode a task's return value."""
        ...

    def loads_value(self, data: bytes) -> Any:
        """Decode what :meth:`dumps_value` wrote."""
        ...


class BadSignature(SerializationError):
    """A signed payload's HMAC does not match: it was altered or signed with another key.

    The worker records such a job as dead with reason ``bad_signature``
    instead of ``decode_error``.
    """


def check_size(data: bytes, limit: int) -> None:
    """Raise :class:`~spoolhouse.errors.PayloadTooLarge` if ``data`` is over ``limit`` bytes.

    A payload of exactly ``limit`` bytes is accepted.
    """
    if len(data) > limit:
        raise PayloadTooLarge(len(data), limit)


# --------------------------------------------------------------------------- JSON


class _Problem(Exception):
    """Raised inside the encoding walk; containers add their path segment on the way out."""

    def __init__(self, problem: str, advice: str = _ADVICE) -> None:
        super().__init__(problem)
        self.problem = problem
        self.advice = advice
        self.segments: list[str] = []  # innermost first


def _short_repr(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _set_sort_key(encoded: Any) -> str:
    return json.dumps(encoded, separators=(",", ":"), ensure_ascii=True)


#: One encoder for every payload: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _scalar_call(args: Sequence[Any]) -> bytes | None:
    """The call payload of positional-only plain scalars, or None for any other call.

    Most calls pass a few ints and strs. Their payload is written here directly,
    byte for byte what the general walk and the encoder write (a test checks
    that), without the walk's per-argument setup and the encoder's per-call
    setup: 0.9-1.4 us for ``(42,)`` where the general path takes 5.4-5.8 (a
    loaded 2-core VM).
    """
    parts = []
    for value in args:
        cls = value.__class__
        if cls is int:
            if not _INT_MIN <= value <= _INT_MAX:
                return None
            parts.append(int.__repr__(value))
        elif cls is str:
            parts.append(_encode_str(value))
        elif cls is float:
            if value - value != 0.0:  # NaN or an infinity: the general path explains
                return None
            parts.append(float.__repr__(value))
        elif value is None:
            parts.append("null")
        elif value is True:
            parts.append("true")
        elif value is False:
            parts.append("false")
        else:
            return None
    try:
        return f'{{"v":{FORMAT_VERSION},"a":[{",".join(parts)}],"k":{{}}}}'.encode()
    except UnicodeEncodeError:
        return None  # a lone surrogate: the general path escapes it


_encode_str: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _to_json_bytes(doc: Any) -> bytes:
    text = _ENCODER.encode(doc)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A str with a lone surrogate has no UTF-8 form; \u escapes round-trip it exactly.
        return json.dumps(
            doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
        ).encode("ascii")


def _encode(value: Any, active: set[int]) -> Any:
    """Return a JSON-ready copy of ``value``; raise :class:`_Problem` where it cannot."""
    cls = type(value)
    if cls is str or value is None or cls is bool:
        return value
    if cls is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise _Problem(
            f"int {_short_repr(value)} is outside the signed 64-bit range",
            "pass it as a str or a Decimal",
        )
    if cls is float:
        if math.isfinite(value):
            return value
        raise _Problem(
            f"float {value!r} has no JSON form",
            "pass None, a str, or a Decimal (Decimal('NaN') is supported)",
        )
    if cls is list:
        key = id(value)
        if key in active:
            raise _Problem(
                "the list contains itself (circular reference)", "pass a structure without cycles"
            )
        active.add(key)
        out: list[Any] = []
        for index, item in enumerate(value):
            try:
                out.append(_encode(item, active))
            except _Problem as problem:
                problem.segments.append(f"[{index}]")
                raise
        active.discard(key)
        return out
    if cls is dict:
        return _encode_dict(value, active)
    if cls is datetime:
        if value.utcoffset() is None:
            raise _Problem(
                "naive datetime (it has no tzinfo), so the time it means is ambiguous",
                "attach a tzinfo, e.g. datetime.now(timezone.utc) or "
                "dt.replace(tzinfo=timezone.utc)",
            )
        return {"$dt": value.isoformat()}
    if cls is date:
        return {"$date": value.isoformat()}
    if cls is time:
        if value.tzinfo is not None and value.utcoffset() is None:
            raise _Problem(
                "time whose tzinfo has no fixed UTC offset",
                "use a fixed offset such as timezone.utc, or pass a datetime",
            )
        return {"$time": value.isoformat()}
    if cls is timedelta:
        return {"$td": [value.days, value.seconds, value.microseconds]}
    if cls is UUID:
        return {"$uuid": str(value)}
    if cls is Decimal:
        return {"$dec": str(value)}
    if cls is bytes:
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if cls is tuple:
        return {"$tuple": _encode_items(value, active)}
    if cls is set or cls is frozenset:
        items = [_encode_element(item, active) for item in value]
        items.sort(key=_set_sort_key)
        return {"$set" if cls is set else "$fset": items}
    # Subclasses of the JSON scalars (StrEnum, IntEnum, numpy.float64) become the plain value.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return _encode(int.__int__(value), active)
    if isinstance(value, float):
        return _encode(float.__float__(value), active)
    raise _Problem(f"{_short_repr(value)} (type {_type_name(value)}) is not a supported type")


def _encode_items(values: tuple[Any, ...], active: set[int]) -> list[Any]:
    out: list[Any] = []
    for index, item in enumerate(values):
        try:
            out.append(_encode(item, active))
        except _Problem as problem:
            problem.segments.append(f"[{index}]")
            raise
    return out


def _encode_element(item: Any, active: set[int]) -> Any:
    try:
        return _encode(item, active)
    except _Problem as problem:
        # Sets have no index; name the element instead.
        problem.segments.append(f"{{{_short_repr(item)}}}")
        raise


def _encode_dict(value: dict[Any, Any], active: set[int]) -> Any:
    key_id = id(value)
    if key_id in active:
        raise _Problem(
            "the dict contains itself (circular reference)", "pass a structure without cycles"
        )
    active.add(key_id)
    str_keys = True
    for k in value:
        if type(k) is not str and not isinstance(k, str):
            str_keys = False
            break
    if str_keys:
        out: dict[str, Any] = {}
        for k, item in value.items():
            try:
                out[k if type(k) is str else str.__str__(k)] = _encode(item, active)
            except _Problem as problem:
                problem.segments.append(f"[{k!r}]")
                raise
        active.discard(key_id)
        if len(out) == 1:
            for only in out:
                if only[:1] == "$":
                    return {"$esc": out}
        return out
    pairs: list[list[Any]] = []
    for k, item in value.items():
        try:
            encoded_key = _encode(k, active)
        except _Problem as problem:
            problem.problem = f"dict key: {problem.problem}"
            problem.segments.append(f"[{_short_repr(k)}]")
            raise
        try:
            pairs.append([encoded_key, _encode(item, active)])
        except _Problem as problem:
            problem.segments.append(f"[{_short_repr(k)}]")
            raise
    active.discard(key_id)
    return {"$map": pairs}


def _encode_root(value: Any, root: str) -> Any:
    try:
        return _encode(value, set())
    except _Problem as problem:
        path = root + "".join(reversed(problem.segments))
        raise SerializationError(
            f"cannot serialize {path}: {problem.problem}; {problem.advice}", path=path
        ) from None
    except RecursionError:
        raise SerializationError(
            f"cannot serialize {root}: it is nested too deeply; pass a flatter structure",
            path=root,
        ) from None


class _Corrupt(Exception):
    """Raised inside the decoding walk for data no encoder of this version writes."""


def _decode(value: Any) -> Any:
    cls = type(value)
    if cls is str or value is None or cls is bool:
        return value
    if cls is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        raise _Corrupt("an int outside the signed 64-bit range")
    if cls is float:
        if math.isfinite(value):
            return value
        raise _Corrupt("a float that is not finite")
    if cls is list:
        return [_decode(item) for item in value]
    if cls is dict:
        if len(value) == 1:
            for tag, inner in value.items():
                if tag[:1] == "$":
                    return _decode_tag(tag, inner)
        return {k: _decode(item) for k, item in value.items()}
    raise _Corrupt(f"a {cls.__name__}")  # pragma: no cover - json.loads makes no other type


def _expect(inner: Any, cls: type, tag: str) -> Any:
    if type(inner) is not cls:
        raise _Corrupt(f"tag {tag} holding a {type(inner).__name__}, not a {cls.__name__}")
    return inner


def _subsecond_offset(text: str) -> timezone | None:
    """The offset of ``text`` if it has a fraction of a second (``+00:00:00.000001``).

    CPython 3.11 ``fromisoformat`` reads such an offset as UTC when its whole
    seconds are zero, so it is parsed here instead.
    """
    sign_at = max(text.rfind("+"), text.rfind("-"))
    offset = text[sign_at + 1 :]
    if sign_at < 0 or "." not in offset or offset.count(":") != 2:
        return None
    hours, minutes, rest = offset.split(":")
    seconds, fraction = rest.split(".")
    delta = timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int(fraction.ljust(6, "0")),
    )
    return timezone(-delta if text[sign_at] == "-" else delta)


def _dec_datetime(inner: Any) -> datetime:
    text = _expect(inner, str, "$dt")
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise _Corrupt("a $dt without a UTC offset")
    if value.utcoffset() == _ZERO and (tz := _subsecond_offset(text)) is not None:
        value = value.replace(tzinfo=tz)
    return value


def _dec_time(inner: Any) -> time:
    text = _expect(inner, str, "$time")
    value = time.fromisoformat(text)
    if value.utcoffset() == _ZERO and (tz := _subsecond_offset(text)) is not None:
        value = value.replace(tzinfo=tz)
    return value


def _dec_timedelta(inner: Any) -> timedelta:
    parts = _expect(inner, list, "$td")
    if len(parts) != 3 or any(type(p) is not int for p in parts):
        raise _Corrupt("a $td that is not [days, seconds, microseconds]")
    return timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _dec_decimal(inner: Any) -> Decimal:
    try:
        return Decimal(_expect(inner, str, "$dec"))
    except InvalidOperation:
        raise _Corrupt(f"a $dec that is not a decimal: {_short_repr(inner)}") from None


def _dec_map(inner: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for pair in _expect(inner, list, "$map"):
        if type(pair) is not list or len(pair) != 2:
            raise _Corrupt("a $map entry that is not a [key, value] pair")
        out[_decode(pair[0])] = _decode(pair[1])
    return out


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$dt": _dec_datetime,
    "$date": lambda inner: date.fromisoformat(_expect(inner, str, "$date")),
    "$time": _dec_time,
    "$td": _dec_timedelta,
    "$uuid": lambda inner: UUID(_expect(inner, str, "$uuid")),
    "$dec": _dec_decimal,
    "$b64": lambda inner: base64.b64decode(_expect(inner, str, "$b64"), validate=True),
    "$tuple": lambda inner: tuple([_decode(i) for i in _expect(inner, list, "$tuple")]),
    "$set": lambda inner: {_decode(i) for i in _expect(inner, list, "$set")},
    "$fset": lambda inner: frozenset([_decode(i) for i in _expect(inner, list, "$fset")]),
    "$map": _dec_map,
    "$esc": lambda inner: {k: _decode(i) for k, i in _expect(inner, dict, "$esc").items()},
}


def _decode_tag(tag: str, inner: Any) -> Any:
    decoder = _TAGS.get(tag)
    if decoder is None:
        raise _Corrupt(f"unknown tag {_short_repr(tag)}")
    try:
        return decoder(inner)
    except _Corrupt:
        raise
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        # ValueError: bad ISO text, UUID or base64; TypeError: unhashable set element or key.
        raise _Corrupt(f"a bad {tag} value ({exc})") from None


def _reject_constant(name: str) -> Any:
    raise _Corrupt(f"the non-JSON constant {name}")


#: One decoder for every payload: ``json.loads`` with options builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse(data: bytes, kind: str) -> dict[str, Any]:
    """The payload document; ``_DECODER`` refuses NaN and Infinity (see _reject_constant)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SerializationError(
            f"cannot decode {kind} payload: expected bytes, got {type(data).__name__}"
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationError(
            f"cannot decode {kind} payload: it is not UTF-8 JSON ({exc}); it was written by "
            "another serializer or corrupted"
        ) from None
    try:
        doc = _DECODER.decode(text)
    except _Corrupt as exc:
        raise SerializationError(f"cannot decode {kind} payload: it contains {exc}") from None
    except RecursionError:
        raise SerializationError(f"cannot decode {kind} payload: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an int with too many digits
        raise SerializationError(
            f"cannot decode {kind} payload: it is not valid JSON ({exc}); it was written by "
            "another serializer or corrupted"
        ) from None
    if type(doc) is not dict or "v" not in doc:
        raise SerializationError(
            f"cannot decode {kind} payload: it is not a Spoolhouse JSON payload (no version)"
        )
    if type(doc["v"]) is not int or doc["v"] != FORMAT_VERSION:
        raise SerializationError(
            f"cannot decode {kind} payload: format version {_short_repr(doc['v'])} is not "
            f"supported (this Spoolhouse reads version {FORMAT_VERSION}); run a matching "
            "Spoolhouse version on the workers"
        )
    return doc


def _decode_root(value: Any, kind: str) -> Any:
    try:
        return _decode(value)
    except _Corrupt as exc:
        raise SerializationError(f"cannot decode {kind} payload: it contains {exc}") from None
    except RecursionError:
        raise SerializationError(f"cannot decode {kind} payload: nested too deeply") from None


def _walked_call(args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    """The call payload of any call: each argument through the tagging walk, then JSON."""
    encoded_args = [_encode_root(arg, f"args[{i}]") for i, arg in enumerate(args)]
    encoded_kwargs: dict[str, Any] = {}
    for key, arg in kwargs.items():
        if type(key) is not str:  # only reachable through a hand-built mapping
            raise SerializationError(
                f"cannot serialize kwargs: keyword {_short_repr(key)} is not a str",
                path="kwargs",
            )
        encoded_kwargs[key] = _encode_root(arg, f"kwargs[{key!r}]")
    return _to_json_bytes({"v": FORMAT_VERSION, "a": encoded_args, "k": encoded_kwargs})


class JSONSerializer:
    """The default serializer: JSON with tagged types (see the module docstring)."""

    name = "json"

    def dumps_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        if not kwargs:
            fast = _scalar_call(args)
            if fast is not None:
                return fast
        return _walked_call(args, kwargs)

    def loads_call(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        doc = _parse(data, "call")
        args, kwargs = doc.get("a"), doc.get("k")
        if type(args) is not list or type(kwargs) is not dict:
            raise SerializationError(
                "cannot decode call payload: it has no argument list 'a' and keyword object 'k'"
            )
        return (
            tuple(_decode_root(args, "call")),
            {key: _decode_root(arg, "call") for key, arg in kwargs.items()},
        )

    def dumps_value(self, value: Any) -> bytes:
        return _to_json_bytes({"v": FORMAT_VERSION, "r": _encode_root(value, "result")})

    def loads_value(self, data: bytes) -> Any:
        doc = _parse(data, "result")
        if "r" not in doc:
            raise SerializationError("cannot decode result payload: it has no value 'r'")
        return _decode_root(doc["r"], "result")


# --------------------------------------------------------------------------- pickle


class PickleSerializer:
    """Pickle, for arguments JSON cannot carry. **Decoding runs code from the store.**

    Anyone who can write a payload to the backend (the SQLite file, the Redis
    server) can make every worker execute arbitrary code. Use it only by
    explicit opt-in, with a store only trusted processes can write, and
    preferably wrapped in :class:`SignedSerializer`.
    """

    name = "pickle"

    def __init__(self, protocol: int = 5) -> None:
        self.protocol = protocol

    def _dumps(self, obj: Any, culprits: Sequence[tuple[str, Any]]) -> bytes:
        try:
            return pickle.dumps(obj, protocol=self.protocol)
        except Exception as exc:
            for path, item in culprits:  # pickle each part alone to name the bad one
                try:
                    pickle.dumps(item, protocol=self.protocol)
                except Exception as inner:
                    raise SerializationError(
                        f"cannot pickle {path}: {type(inner).__name__}: {inner}", path=path
                    ) from inner
            raise SerializationError(f"cannot pickle: {type(exc).__name__}: {exc}") from exc

    def _loads(self, data: bytes, kind: str) -> Any:
        try:
            # Allowed here and only here (tests/unit/test_no_dynamic_code.py): the user opted
            # in to pickle by choosing this serializer, knowing it executes code from the store.
            return pickle.loads(data)
        except Exception as exc:
            raise SerializationError(
                f"cannot unpickle {kind} payload: {type(exc).__name__}: {exc}"
            ) from None

    def dumps_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        culprits = [(f"args[{i}]", a) for i, a in enumerate(args)]
        culprits += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
        return self._dumps((tuple(args), dict(kwargs)), culprits)

    def loads_call(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        call = self._loads(data, "call")
        if (
            type(call) is not tuple
            or len(call) != 2
            or type(call[0]) is not tuple
            or type(call[1]) is not dict
        ):
            raise SerializationError("cannot decode call payload: not an (args, kwargs) pickle")
        return call[0], call[1]

    def dumps_value(self, value: Any) -> bytes:
        return self._dumps(value, [("result", value)])

    def loads_value(self, data: bytes) -> Any:
        return self._loads(data, "result")


# --------------------------------------------------------------------------- signing

_SIG_PREFIX = b"sh1:"
_SIG_HEX_LEN = 64  # hex of an HMAC-SHA256
_SIG_HEADER_LEN = len(_SIG_PREFIX) + _SIG_HEX_LEN + 1


class SignedSerializer:
    """Wraps another serializer and signs its payloads with HMAC-SHA256.

    Layout: ``b"sh1:" + hex(hmac) + b":" + inner payload``; the inner JSON
    stays readable. The MAC covers a domain label (``call`` or ``value``) and
    the inner bytes, so a stored result cannot pass as a call. Verification
    happens before the inner serializer reads a byte; a mismatch raises
    :class:`BadSignature`.

    ``previous_keys`` are accepted when verifying, never used to sign: add the
    old key there while rotating, until jobs signed with it are gone.
    """

    def __init__(
        self, inner: Serializer, key: bytes, *, previous_keys: Sequence[bytes] = ()
    ) -> None:
        for k in (key, *previous_keys):
            if not isinstance(k, bytes) or len(k) < 16:
                raise ConfigurationError(
                    "SignedSerializer needs a key of at least 16 bytes; generate one with "
                    "secrets.token_bytes(32) and keep it in your configuration"
                )
        self.inner = inner
        self.name = f"signed-{inner.name}"
        self._key = key
        self._keys = (key, *previous_keys)

    def sign(self, data: bytes, *, context: str) -> bytes:
        """Prefix ``data`` with its signature under ``context`` (a domain label)."""
        mac = hmac.new(self._key, context.encode() + b"\x00" + data, hashlib.sha256)
        return _SIG_PREFIX + mac.hexdigest().encode("ascii") + b":" + data

    def verify(self, signed: bytes, *, context: str) -> bytes:
        """Return the inner bytes of ``signed``, or raise :class:`BadSignature`."""
        signed = bytes(signed)
        if (
            len(signed) < _SIG_HEADER_LEN
            or not signed.startswith(_SIG_PREFIX)
            or signed[_SIG_HEADER_LEN - 1 : _SIG_HEADER_LEN] != b":"
        ):
            raise BadSignature(
                "bad signature: the payload is not signed; it was written without the signing "
                "key or altered"
            )
        given = signed[len(_SIG_PREFIX) : _SIG_HEADER_LEN - 1]
        data = signed[_SIG_HEADER_LEN:]
        message = context.encode() + b"\x00" + data
        for key in self._keys:
            expected = hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")
            if hmac.compare_digest(expected, given):
                return data
        raise BadSignature(
            "bad signature: the payload was altered or signed with another key; it was not decoded"
        )

    def dumps_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
        return self.sign(self.inner.dumps_call(args, kwargs), context="call")

    def loads_call(self, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self.inner.loads_call(self.verify(data, context="call"))

    def dumps_value(self, value: Any) -> bytes:
        return self.sign(self.inner.dumps_value(value), context="value")

    def loads_value(self, data: bytes) -> Any:
        return self.inner.loads_value(self.verify(data, context="value"))
