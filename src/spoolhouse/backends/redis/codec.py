"""Job records to Redis hash fields and back, exactly.

Every :class:`~spoolhouse.job.Job` field is one hash field named like the
dataclass field; ``None`` is an absent field, and so is a field at its default
among :data:`DEFAULTS` (``priority``, ``attempt`` and ``lost`` at 0,
``abort_requested`` false: most jobs keep them, and every field written costs
the enqueue, and every field read a claim; the Lua scripts read an absent one
as its default). Floats are written with
``repr`` (the shortest text that reads back as the same double), ints in
decimal, bools as ``0``/``1``, bytes as they are, strings as UTF-8. Fields
whose name starts with ``_`` belong to the backend (see :mod:`.keys`) and are
ignored when decoding, except ``_d``.

``_d`` packs the fields no script reads and no transition changes, :data:`PACKED`
(``id``, ``created_at``, ``timeout``, ``headers``, ``payload``), into one value: a
format version ``1``, the byte lengths of ``id``, ``created_at``, ``timeout`` and
``headers`` in decimal separated by commas (``-`` for ``None``) and ended by ``;``,
then those four values one after the other, then the payload to the end. One field
instead of three to five saves the enqueue two to four ``ARGV`` strings and hash
fields, and a claim as many reply elements. Jobs stored with separate fields (before
``_d``) decode the same.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ...job import Job, JobState

_FLOATS = frozenset(
    {
        "run_at",
        "timeout",
        "created_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "result_ttl",
        "expires_at",
    }
)
_INTS = frozenset({"priority", "attempt", "max_attempts", "lost"})
_BYTES = frozenset({"payload", "result"})
_BOOLS = frozenset({"abort_requested"})
_NAMES = tuple(f.name for f in dataclasses.fields(Job))
#: The fields packed into ``_d`` (see the module's docstring), payload last.
PACKED = ("id", "created_at", "timeout", "headers", "payload")
_UNPACKED = tuple(name for name in _NAMES if name not in PACKED)

#: Fields left out of the hash at these values (of exactly this type); decoding an
#: absent one gives the dataclass default, which is the same value.
DEFAULTS: dict[str, object] = {"priority": 0, "attempt": 0, "lost": 0, "abort_requested": False}


def _at_default(name: str, value: object) -> bool:
    if name not in DEFAULTS:
        return False
    default = DEFAULTS[name]
    return type(value) is type(default) and value == default


def float_text(value: float) -> str:
    """``value`` as text that Redis, Lua and Python all read back as the same double."""
    number = float(value)
    if math.isnan(number):
        raise ValueError("a job time or duration cannot be NaN")
    return repr(number)


def order_key(value: float) -> str:
    """16 hex digits whose byte order is the numeric order of ``value``.

    Flipping the sign bit of a non-negative IEEE 754 double, or every bit of a
    negative one, gives an unsigned integer in the same order as the numbers.
    """
    (bits,) = struct.unpack(">Q", struct.pack(">d", float(value)))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def _encode_value(name: str, value: object) -> bytes | str:
    if name in _BYTES:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"Job.{name} must be bytes, not {type(value).__name__}")
        return bytes(value)
    if name in _BOOLS:
        return "1" if value else "0"
    if name in _FLOATS:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"Job.{name} must be a float, not {type(value).__name__}")
        return float_text(value)
    if name in _INTS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Job.{name} must be an int, not {type(value).__name__}")
        return str(value)
    if name == "state":
        return JobState(str(value)).value
    if not isinstance(value, str):
        raise TypeError(f"Job.{name} must be a str, not {type(value).__name__}")
    return value


def pack(job: Job) -> bytes:
    """The ``_d`` value of ``job`` (with the type checks of every other field)."""
    job_id = _to_str("id", job.id)
    created = _to_float("created_at", job.created_at)
    timeout = None if job.timeout is None else _to_float("timeout", job.timeout)
    headers = None if job.headers is None else _to_str("headers", job.headers)
    return b"1%d,%d,%s,%s;%s%s%s%s%s" % (
        len(job_id),
        len(created),
        b"-" if timeout is None else b"%d" % len(timeout),
        b"-" if headers is None else b"%d" % len(headers),
        job_id,
        created,
        timeout or b"",
        headers or b"",
        _to_bytes("payload", job.payload),
    )


def unpack(raw: bytes, values: dict[str, object]) -> None:
    """Put the fields packed in ``raw`` (a ``_d`` value) into ``values``."""
    if raw[:1] != b"1":
        raise ValueError(f"unknown _d format {raw[:1]!r}")
    head = raw.index(b";")
    n_id, n_created, n_timeout, n_headers = raw[1:head].split(b",")
    pos = head + 1
    end = pos + int(n_id)
    values["id"] = raw[pos:end].decode()
    pos, end = end, end + int(n_created)
    values["created_at"] = float(raw[pos:end])
    if n_timeout != b"-":
        pos, end = end, end + int(n_timeout)
        values["timeout"] = float(raw[pos:end])
    if n_headers != b"-":
        pos, end = end, end + int(n_headers)
        values["headers"] = raw[pos:end].decode()
    values["payload"] = raw[end:]


def encode_job(job: Job) -> list[bytes | str]:
    """Field/value pairs of the job hash (``None`` fields left out), flattened."""
    out: list[bytes | str] = ["_d", pack(job)]
    for name in _UNPACKED:
        value = getattr(job, name)
        if value is None or _at_default(name, value):
            continue
        out.append(name)
        out.append(_encode_value(name, value))
    return out


def _resp(raw: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def _to_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"Job.{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _to_float(name: str, value: object) -> bytes:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"Job.{name} must be a float, not {type(value).__name__}")
    return float_text(value).encode()


def _to_int(name: str, value: object) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"Job.{name} must be an int, not {type(value).__name__}")
    return b"%d" % value


def _to_str(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"Job.{name} must be a str, not {type(value).__name__}")
    return value.encode()


def _to_bool(name: str, value: object) -> bytes:
    return b"1" if value else b"0"


def _to_state(name: str, value: object) -> bytes:
    return JobState(str(value)).value.encode()


def _converter(name: str) -> Any:
    if name in _BYTES:
        return _to_bytes
    if name in _BOOLS:
        return _to_bool
    if name in _FLOATS:
        return _to_float
    if name in _INTS:
        return _to_int
    if name == "state":
        return _to_state
    return _to_str


# (field name, its RESP bulk string, the converter of its value to bytes, the value left
# out, of its exact type, or None), in field order; the packed ones are in _d
_RESP_FIELDS = tuple(
    (name, _resp(name.encode()), _converter(name), DEFAULTS.get(name)) for name in _UNPACKED
)


def encode_job_resp(job: Job) -> tuple[int, bytes]:
    """:func:`encode_job` as RESP bulk strings, ready to send: (how many, the bytes).

    The same checks and the same bytes as ``encode_job``, in one pass.
    """
    packed = pack(job)
    out: list[bytes] = [b"$2\r\n_d\r\n", b"$%d\r\n%s\r\n" % (len(packed), packed)]
    for name, bulk_name, convert, default in _RESP_FIELDS:
        value = getattr(job, name)
        if value is None or (value == default and type(value) is type(default)):
            continue
        raw = convert(name, value)
        out.append(bulk_name)
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return len(out), b"".join(out)


# The fields enqueue_batch.lua takes in places of their own (task, queue, run_at and
# max_attempts), sets itself (state: pending) or never receives (key: such jobs go to
# enqueue.lua); the others are the shared pairs of its ARGV.
_BATCH_PLACED = frozenset({"task", "queue", "state", "run_at", "max_attempts", "key"})
_SHARED_FIELDS = tuple(entry for entry in _RESP_FIELDS if entry[0] not in _BATCH_PLACED)
_get_shared = operator.attrgetter(*(entry[0] for entry in _SHARED_FIELDS))
# Of those, the ones a new job of a spooler can have set; when the others are all None,
# only these are looked at.
_COMMON = frozenset({"priority", "attempt", "lost", "result_ttl", "abort_requested"})
_COMMON_FIELDS = tuple(entry for entry in _SHARED_FIELDS if entry[0] in _COMMON)
_get_common = operator.attrgetter(*(entry[0] for entry in _COMMON_FIELDS))
_get_rare = operator.attrgetter(*(e[0] for e in _SHARED_FIELDS if e[0] not in _COMMON))
_RARE_UNSET = (None,) * (len(_SHARED_FIELDS) - len(_COMMON_FIELDS))


def _shared_pairs(job: Job) -> list[bytes]:
    """The field/value pairs, as RESP bulk strings, of ``job``'s fields that the
    enqueue scripts take as given (those not at their default), checked as
    :func:`encode_job_resp` checks them."""
    shared: list[bytes] = []
    if _get_rare(job) == _RARE_UNSET:
        values, entries = _get_common(job), _COMMON_FIELDS
    else:
        values, entries = _get_shared(job), _SHARED_FIELDS
    for value, (name, bulk_name, convert, default) in zip(values, entries, strict=True):
        if value is None or (value == default and type(value) is type(default)):
            continue
        raw = convert(name, value)
        shared.append(b"%s$%d\r\n%s\r\n" % (bulk_name, len(raw), raw))
    return shared


def batch_resp(
    template: Job,
    ids: Sequence[str],
    payloads: Sequence[bytes],
    headers: Sequence[str | None],
) -> tuple[int, bytes]:
    """``ARGV[4]`` on of ``enqueue_batch.lua`` as RESP bulk strings: (how many, the bytes).

    The jobs are ``template`` with each id, payload and headers put in; its own are not
    used, nor its key (the caller sends only jobs without one) or state (the script
    stores them pending). Each job's hash is the one :func:`encode_job_resp` gives
    (with ``_rk``), with the same checks, its shared fields sent once: only the id and
    ``_d`` per job. Also the single enqueue's encoder, hence the fast paths for the
    exact types a spooler makes.
    """
    task, queue = template.task, template.queue
    run_at, attempts = template.run_at, template.max_attempts
    raw_task = task.encode() if type(task) is str else _to_str("task", task)
    raw_queue = queue.encode() if type(queue) is str else _to_str("queue", queue)
    raw_run_at = float_bytes("run_at", run_at)
    raw_attempts = b"%d" % attempts if type(attempts) is int else _to_int("max_attempts", attempts)
    shared = _shared_pairs(template)
    t = b"%d" % (2 * len(shared))
    out = [
        b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$16\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        % (
            len(raw_task), raw_task, len(raw_queue), raw_queue, len(raw_run_at), raw_run_at,
            order_key(run_at).encode(), len(raw_attempts), raw_attempts, len(t), t,
        ),
        *shared,
    ]
    # _d of each job: see pack (the same bytes)
    created = float_bytes("created_at", template.created_at)
    timeout = None if template.timeout is None else float_bytes("timeout", template.timeout)
    head = b"%d,%s," % (len(created), b"-" if timeout is None else b"%d" % len(timeout))
    tail = created + (timeout or b"")
    append = out.append
    for job_id, payload, text in zip(ids, payloads, headers, strict=True):
        raw_id = job_id.encode() if type(job_id) is str else _to_str("id", job_id)
        if type(payload) is not bytes:
            payload = _to_bytes("payload", payload)
        if text is None:
            packed = b"1%d,%s-;%s%s%s" % (len(raw_id), head, raw_id, tail, payload)
        else:
            raw_headers = text.encode() if type(text) is str else _to_str("headers", text)
            packed = b"1%d,%s%d;%s%s%s%s" % (
                len(raw_id), head, len(raw_headers), raw_id, tail, raw_headers, payload
            )
        append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(raw_id), raw_id, len(packed), packed))
    return 6 + 2 * len(shared) + 2 * len(ids), b"".join(out)


def single_resp(job: Job, now: float) -> tuple[int, bytes]:
    """``ARGV[3]`` on of ``enqueue_one.lua`` for ``job`` (pending, without a unique key)
    enqueued at ``now``, as RESP bulk strings: (how many, the bytes).

    The hash is the one :func:`batch_resp` gives for ``job`` alone, with the same
    checks; what that script works out on the server is sent worked out: ``_rk`` whole,
    and the job's score in its ready set when ``run_at`` is due at ``now`` (``now`` and
    ``run_at`` read as the script reads their text: ``repr`` of the same doubles), else
    an empty string.
    """
    job_id, task, queue = job.id, job.task, job.queue
    run_at, attempts = job.run_at, job.max_attempts
    raw_id = job_id.encode() if type(job_id) is str else _to_str("id", job_id)
    raw_task = task.encode() if type(task) is str else _to_str("task", task)
    raw_queue = queue.encode() if type(queue) is str else _to_str("queue", queue)
    raw_run_at = float_bytes("run_at", run_at)
    raw_attempts = b"%d" % attempts if type(attempts) is int else _to_int("max_attempts", attempts)
    if type(now) is not float or now != now:
        now = float(_to_float("now", now))
    shared = _shared_pairs(job)
    # the score of ready_score() in _lib.lua: the negated priority (checked above when set)
    priority = job.priority
    if float(run_at) > now:
        score = b""
    elif priority is None or priority == 0:
        score = b"0"
    else:
        score = b"%d" % -priority
    # _d: see pack (the same bytes); a spooler's job was created at its run_at, the
    # very same float, whose text is already made
    created_at = job.created_at
    created = raw_run_at if created_at is run_at else float_bytes("created_at", created_at)
    timeout = None if job.timeout is None else float_bytes("timeout", job.timeout)
    payload = job.payload
    if type(payload) is not bytes:
        payload = _to_bytes("payload", payload)
    text = job.headers
    if text is None:
        packed = b"1%d,%d,%s,-;%s%s%s%s" % (
            len(raw_id), len(created), b"-" if timeout is None else b"%d" % len(timeout),
            raw_id, created, timeout or b"", payload,
        )
    else:
        raw_headers = text.encode() if type(text) is str else _to_str("headers", text)
        packed = b"1%d,%d,%s,%d;%s%s%s%s%s" % (
            len(raw_id), len(created), b"-" if timeout is None else b"%d" % len(timeout),
            len(raw_headers), raw_id, created, timeout or b"", raw_headers, payload,
        )
    rk = order_key(run_at).encode() + raw_id
    out = (
        b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        b"$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
        % (
            len(raw_id), raw_id, len(packed), packed, len(raw_task), raw_task,
            len(raw_queue), raw_queue, len(raw_run_at), raw_run_at,
            len(raw_attempts), raw_attempts, len(rk), rk, len(score), score,
        )
    )
    if shared:
        out += b"".join(shared)
    return 8 + 2 * len(shared), out


def float_bytes(name: str, value: object) -> bytes:
    """:func:`float_text` as bytes, with the type check of the codec (``name`` is the
    field's, for the message) and a fast path for a float that is not NaN."""
    if type(value) is float and value == value:
        return repr(value).encode()
    return _to_float(name, value)


def _decode_bool(raw: bytes) -> bool:
    return raw == b"1"


def _decode_state(raw: bytes) -> JobState:
    return JobState(raw.decode())


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8")


def _decoder(name: str) -> Callable[[bytes], object]:
    if name in _BYTES:
        return bytes
    if name in _FLOATS:
        return float
    if name in _INTS:
        return int
    if name in _BOOLS:
        return _decode_bool
    if name == "state":
        return _decode_state
    return _decode_str


# a hash field's raw name -> (the Job field, the decoder of its value); others are ignored
_DECODERS: dict[bytes, tuple[str, Callable[[bytes], object]]] = {
    name.encode(): (name, _decoder(name)) for name in _NAMES
}


def pairs(reply: Sequence[Any] | Mapping[Any, Any]) -> Iterator[tuple[bytes, bytes]]:
    """Field, value pairs of an ``HGETALL`` reply: a flat list (from Lua) or a dict.

    Replies are bytes: the clients never decode responses.
    """
    if isinstance(reply, Mapping):
        yield from reply.items()
    else:
        items = iter(reply)
        yield from zip(items, items, strict=False)  # (0, 1), (2, 3), ...; an odd last one is dropped


def decode_job(reply: Sequence[Any] | Mapping[Any, Any]) -> Job:
    """The job of an ``HGETALL`` reply (one dict lookup per field: claims decode many)."""
    values: dict[str, object] = {}
    decoders = _DECODERS
    for raw_name, raw in pairs(reply):
        known = decoders.get(raw_name)
        if known is not None:
            values[known[0]] = known[1](raw)
        elif raw_name == b"_d":
            unpack(raw, values)
    return Job(**values)  # type: ignore[arg-type]
