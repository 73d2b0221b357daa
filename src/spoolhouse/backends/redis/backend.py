"""The Redis backend: every state transition is one atomic Lua script.

Three connection pools per process, made lazily and rebuilt after ``fork()``:

* the producer pool, used by :meth:`RedisBackend.enqueue` and
  :meth:`~RedisBackend.enqueue_many`, whose connect and read timeouts are
  ``enqueue_timeout``, so a web request never waits longer than that for a
  dead or paused Redis;
* the main pool (timeouts ``socket_timeout``) for every other operation;
* the blocking pool for :meth:`~RedisBackend.wait` (``BLPOP``), whose read
  timeout exceeds the longest block it asks for.

No pool retries a command: a failure raises
:class:`~spoolhouse.errors.BackendUnavailable` (or ``EnqueueTimeout``) at
once, and the next call reconnects. Key layout: :mod:`.keys`; scripts:
:mod:`.scripts` and ``lua/``.

Scripts are the hot path (enqueue for producers, claim and complete for
workers), so they skip most of redis-py: the ``EVALSHA`` is written in RESP by
:func:`_bulk` (its head, script and keys, packed once per script), sent on a
connection of the right pool kept aside between calls, and the reply read with
the connection's own parser; a ``NOSCRIPT`` reply sends the script's source
with ``EVAL`` (nothing ran). On Redis 7 the same calls are ``FCALL``s of the
functions of :func:`.scripts.library`, loaded on a ``Function not found``
reply. Every other command goes through redis-py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import ConnectionPool, parse_url
from redis.retry import Retry

from ...errors import BackendUnavailable, ConfigurationError, EnqueueTimeout, StorageFull
from ...job import FINAL_STATES, Job, JobBatch, JobState
from ..base import CancelResult, LeaseState, TaskLimit
from .codec import (
    batch_resp,
    decode_job,
    encode_job,
    encode_job_resp,
    float_bytes,
    float_text,
    order_key,
    pairs,
    single_resp,
)
from .keys import Keyspace
from .scripts import NAMES, READ_ONLY, Scripts, library, source

log = logging.getLogger("spoolhouse.backends.redis")

#: Longest single BLPOP; ``wait`` may return early, so longer waits just loop in the caller.
MAX_BLOCK = 30.0
#: Scheduled jobs moved to the ready set per queue and claim (bounds one script's run time).
PROMOTE_BATCH = 1000
#: Ready-set entries read per page when a claim skips jobs of tasks at their limit.
SKIP_PAGE = 100
#: Most jobs of tasks at their limit one claim skips per queue (10 pages); jobs further
#: back wait for a later claim, once the jobs in front of them can start.
SKIP_MAX = 1000
#: Jobs rescued per script call in :meth:`RedisBackend.rescue_expired`.
RESCUE_BATCH = 500
#: Jobs examined per script call in :meth:`RedisBackend.purge`.
PURGE_BATCH = 500
#: Job ids per script call in :meth:`RedisBackend.delete`.
DELETE_BATCH = 1000
#: How long per-minute outcome counts are kept (the contract asks for at least 24 hours;
#: the SQLite backend keeps as long): :meth:`RedisBackend.prune` trims older minutes.
STATS_RETENTION = 7 * 86400.0
#: Most stats minutes one prune trims (a backlog goes over several prunes).
STATS_TRIM_BATCH = 1000
#: Seconds before the server clock offset used by enqueue deadlines is measured again.
OFFSET_TTL = 60.0
#: Keys deleted per UNLINK in :meth:`RedisBackend.destroy`.
DESTROY_BATCH = 500
#: Longest a claim may come after a claim sent ahead by :meth:`RedisBackend.wait` ran (by
#: this host's clock) and still take its jobs.
AHEAD_SKEW = 1.0
#: How far ahead of this host's clock (as estimated from the server's) a claim sent ahead
#: by :meth:`RedisBackend.wait` takes its ``now``: the estimate is off by up to half a
#: round trip, and a job spooled on this host a fraction of a millisecond before must be
#: due. A claim takes those jobs only when its own ``now`` is at least that time less
#: this much again.
AHEAD_EARLY = 0.002
#: Jobs moved to the schema 2 index per call of ``migrate.lua`` (see :meth:`RedisBackend._migrate`).
MIGRATE_BATCH = 1000

# Replies that mean "Redis cannot take writes right now", not a bug of ours.
_UNAVAILABLE_REPLIES = (
    "MISCONF",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "BUSY",
    "TRYAGAIN",
)

_parse_url: Any = parse_url  # untyped in redis-py

_STATE_VALUES = frozenset(s.value for s in JobState)
# The shas of the read-only scripts as sent to Redis 7 (with the no-writes flag).
_READ_ONLY_SHAS = frozenset(
    hashlib.sha1(source(name, flags=True).encode()).hexdigest() for name in READ_ONLY
)


@functools.cache
def _function_names() -> dict[str, str]:
    """sha of a script as sent to Redis 7 -> the name of its function in :func:`library`."""
    lib, _ = library()
    return {
        hashlib.sha1(source(name, flags=True).encode()).hexdigest(): f"{lib}_{name}"
        for name in NAMES
    }
_FINAL_VALUES = frozenset(s.value for s in FINAL_STATES)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def mask_url(url: str) -> str:
    """``url`` with any password (in the authority or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        items = parse_qsl(query, keep_blank_values=True)
        if any(name == "password" for name, _ in items):
            masked = [(n, "***" if n == "password" else v) for n, v in items]
            query = urlencode(masked, safe="*/", quote_via=quote)
    # built by hand: urlunsplit drops the empty authority of unix:///path
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        shown += "?" + query
    if parts.fragment:
        shown += "#" + parts.fragment
    return shown


def _limits_json(limits: Mapping[str, TaskLimit] | None) -> str:
    """The claim script's ARGV for ``limits``: JSON, or ``''`` when no task is limited."""
    rules: dict[str, dict[str, float]] = {}
    for task, rule in (limits or {}).items():
        entry: dict[str, float] = {}
        if rule.concurrency is not None:
            entry["c"] = int(rule.concurrency)
        if rule.rate is not None:
            entry["r"] = int(rule.rate)
            per = float(rule.per)
            if math.isnan(per):
                raise ConfigurationError(f"TaskLimit.per of {task!r} cannot be NaN")
            entry["p"] = max(min(per, 1e300), -1e300)  # JSON has no infinity
        if entry:
            rules[task] = entry
    return json.dumps(rules, allow_nan=False) if rules else ""


def _claim_args(
    now: str, lease: str, context: tuple[str, tuple[str, ...], float, str], limit: int
) -> list[str | int]:
    """The ARGV of ``claim.lua`` after the root: ``now`` and ``lease`` as the script reads
    them, then the worker id, a new token head, ``limit``, the bounds, the limits
    (JSON) and the queues of ``context`` (worker id, queues, lease, limits)."""
    worker_id, queues, _, rules = context
    return [
        now, lease, worker_id, os.urandom(8).hex(), limit, PROMOTE_BATCH, rules, SKIP_MAX,
        SKIP_PAGE, *queues,
    ]


def _minute(now: float) -> str:
    """The stats minute of a transition at ``now``: ``floor(now / 60)`` in decimal.

    Computed here, not in Lua, so that it is Python's floor division (as in every
    backend) to the last bit; ``''`` (count nothing) for a time that is not finite.
    """
    return str(int(now // 60)) if math.isfinite(now) else ""


def _bulk(values: Sequence[bytes | str | int | float]) -> bytes:
    """``values`` as RESP bulk strings, one after the other (no array header).

    Integers in decimal, floats with ``repr`` (as redis-py writes them), text as UTF-8.
    """
    out: list[bytes] = []
    for value in values:
        if isinstance(value, str):
            raw = value.encode()
        elif isinstance(value, int):
            raw = b"%d" % value
        elif isinstance(value, float):
            raw = repr(value).encode()
        else:
            raw = bytes(value)
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _micros(seconds: float) -> str:
    """``seconds`` in whole microseconds (rounded down, at least 0), as decimal text."""
    return str(max(math.floor(seconds * 1_000_000), 0))


def _positive(name: str, value: float) -> float:
    number = float(value)
    if not number > 0 or math.isinf(number):
        raise ConfigurationError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class _Clients:
    """The pools and scripts of one process."""

    pid: int
    main: redis.Redis
    producer: redis.Redis
    blocking: redis.Redis
    flagged: Scripts  # for Redis 7 and later
    legacy: Scripts  # for older servers
    # connections between script calls, taken from (and counted in) the producer and
    # the main pool: list.pop and list.append are atomic, so threads share them
    idle_producer: list[Any]
    idle_main: list[Any]


class RedisBackend:
    """Jobs in Redis, shared by every process and host that uses the same URL and prefix.

    :param url: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` for TLS,
        or ``unix:///path/to/redis.sock[?db=0&password=...]``; redis-py options such
        as ``socket_timeout`` may be given in the query string.
    :param prefix: namespace of every key; two spoolers with different prefixes
        share a Redis without seeing each other's jobs.
    :param enqueue_timeout: the longest an enqueue waits for Redis (to connect and
        to answer) before it raises :class:`~spoolhouse.errors.EnqueueTimeout`.
    :param socket_timeout: the same bound for every other operation, unless the
        URL's query string sets one.
    :param check_eviction: refuse to run against a server whose
        ``maxmemory-policy`` may evict jobs (see :meth:`check_server`).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "spoolhouse",
        enqueue_timeout: float = 2.0,
        socket_timeout: float = 5.0,
        check_eviction: bool = True,
    ) -> None:
        self.url = mask_url(url)
        self.prefix = prefix
        self.keys = Keyspace(prefix)
        self.enqueue_timeout = _positive("enqueue_timeout", enqueue_timeout)
        self.socket_timeout = _positive("socket_timeout", socket_timeout)
        self.check_eviction = check_eviction
        try:
            self._options: dict[str, Any] = _parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid Redis URL {self.url!r}: {exc}; use redis://host:6379/0, "
                "rediss://host:6380/0 or unix:///path/to/redis.sock"
            ) from exc
        self._timeout = float(self._options.get("socket_timeout", self.socket_timeout))
        self._lock = threading.Lock()
        self._clients: _Clients | None = None
        self._checked = False
        self._migrated = False
        self._flags = False
        self._offset: float | None = None
        self._offset_at = 0.0
        self._precise_offset: float | None = None
        self._precise_offset_at = 0.0
        # sha -> RESP of EVALSHA, the sha, the KEYS and the root: the head of a script call
        self._heads: dict[str, bytes] = {}
        # Redis 7 runs the scripts as functions (FCALL) unless loading the library failed
        # for good (no permission): then EVALSHA, as on Redis 6
        self._functions = True
        # The claim ahead (see wait): the context and limit of the last claim that found
        # nothing, and the jobs a wait claimed for the claim that follows it.
        self._ahead_lock = threading.Lock()
        self._idle_claim: tuple[tuple[str, tuple[str, ...], float, str], int] | None = None
        self._ahead: tuple[tuple[str, tuple[str, ...], float, str], list[Job]] | None = None

    @property
    def wait_client_name(self) -> str:
        """The CLIENT SETNAME of connections blocked in :meth:`wait` (seen in CLIENT LIST)."""
        return "spoolhouse-wait:" + re.sub(r"[^A-Za-z0-9_.:-]", "_", self.prefix)

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r}, prefix={self.prefix!r})"

    # -- connections ------------------------------------------------------------
    def _pool(
        self, socket_timeout: float, connect_timeout: float, name: str | None = None
    ) -> ConnectionPool:
        options = dict(self._options)
        if name is not None:
            options.setdefault("client_name", name)
        options["socket_timeout"] = socket_timeout
        options["socket_connect_timeout"] = connect_timeout
        # One attempt per call: a retry would stretch the caller's time bound.
        options["retry"] = Retry(NoBackoff(), 0)
        options["retry_on_timeout"] = False
        options["protocol"] = 2
        return ConnectionPool(**options)

    def _connect(self) -> _Clients:
        default = self._timeout
        connect = float(self._options.get("socket_connect_timeout", default))
        main = redis.Redis(connection_pool=self._pool(default, connect))
        producer = redis.Redis(
            connection_pool=self._pool(self.enqueue_timeout, self.enqueue_timeout)
        )
        blocking = redis.Redis(
            connection_pool=self._pool(MAX_BLOCK + default, connect, self.wait_client_name)
        )
        return _Clients(
            os.getpid(),
            main,
            producer,
            blocking,
            flagged=Scripts.register(main, flags=True),
            legacy=Scripts.register(main, flags=False),
            idle_producer=[],
            idle_main=[],
        )

    def _current(self) -> _Clients:
        clients = self._clients
        if clients is None or clients.pid != os.getpid():
            with self._lock:
                clients = self._clients
                if clients is None or clients.pid != os.getpid():
                    # After fork() the parent's sockets are left alone, never reused.
                    clients = self._connect()
                    self._clients = clients
        return clients

    def _ready(self) -> _Clients:
        clients = self._current()
        if not self._checked:
            self._check(clients.main, BackendUnavailable)
        if not self._migrated:
            self._migrate(clients)
        return clients

    def _migrate(self, clients: _Clients) -> None:
        """Move a store written by schema 1 (``ids``, ``state:``, ``queue:``, ``pending:``,
        ``counts``) to the ``jobs:<state>:<queue>`` index and the ``queues`` directory,
        :data:`MIGRATE_BATCH` jobs per atomic call.

        Runs once per process, on the first operation of the main pool (workers,
        operators), never in an enqueue; on a schema 2 store it is one ``EXISTS``.
        Safe to interrupt and to run in several processes at once: each call moves
        what is left.
        """
        script = self._scripts(clients).migrate
        moved = 0
        with self._errors("the schema migration"):
            # a plain read first: a migrated store costs no script call, and inspection
            # still answers while writes are paused
            while clients.main.exists(self.keys.ids, self.keys.counts):
                n = int(
                    self._evalsha(
                        clients.main, clients.idle_main, script, _bulk([MIGRATE_BATCH]), 1
                    )
                )
                moved += n
        if moved:
            log.info("moved %d jobs of Redis prefix %r to the schema 2 index", moved, self.prefix)
        self._migrated = True

    @contextmanager
    def _errors(
        self,
        what: str,
        error: type[BackendUnavailable] = BackendUnavailable,
        timeout: float | None = None,
    ) -> Iterator[None]:
        """Translate redis-py's errors into Spoolhouse's (see :meth:`_translate`)."""
        try:
            yield
        except redis.exceptions.RedisError as exc:
            translated = self._translate(exc, what, error, timeout)
            if translated is None:
                raise
            raise translated from exc

    def _translate(
        self,
        exc: redis.exceptions.RedisError,
        what: str,
        error: type[BackendUnavailable],
        timeout: float | None,
    ) -> Exception | None:
        """The Spoolhouse error for redis-py's ``exc``, or None to raise ``exc`` as it is.

        ``error`` when Redis is unreachable, slow or refuses writes (``EnqueueTimeout``
        for producers); ``StorageFull`` when it is out of memory.
        """
        # An enqueue that fails stored nothing (its script is fenced by a deadline); for
        # other operations a lost reply leaves the outcome unknown, which leases and
        # fencing tokens make safe.
        outcome = (
            "nothing was stored"
            if issubclass(error, EnqueueTimeout)
            else "it may or may not have been applied"
        )
        if isinstance(exc, redis.exceptions.TimeoutError):
            bound = self._timeout if timeout is None else timeout
            return error(
                f"Redis at {self.url} did not answer {what} within {bound:g} s; {outcome}. "
                "Check that the server is up and not paused, or raise the timeout"
            )
        if isinstance(exc, redis.exceptions.ConnectionError):
            return error(
                f"cannot reach Redis at {self.url} for {what} ({exc}); {outcome}. "
                "Check that the server is running and the URL is right"
            )
        if isinstance(exc, redis.exceptions.NoPermissionError):
            return ConfigurationError(
                f"the Redis user of {self.url} may not run {what} ({exc}); grant it the "
                f"keys {self.keys.pattern} and the commands FCALL, FCALL_RO, FUNCTION LOAD, EVALSHA, "
                "EVALSHA_RO, EVAL, EVAL_RO, "
                "BLPOP, EXISTS, HGETALL, SMEMBERS, ZRANGE, ZREVRANGEBYLEX, SCAN, UNLINK, INFO, "
                "TIME (and CONFIG GET)"
            )
        if isinstance(exc, redis.exceptions.ResponseError):
            message = str(exc)
            if isinstance(exc, redis.exceptions.OutOfMemoryError) or message.startswith("OOM"):
                return StorageFull(
                    f"Redis at {self.url} is out of memory ({message}); nothing was stored. "
                    "Raise maxmemory, or prune finished jobs"
                )
            if isinstance(exc, redis.exceptions.ReadOnlyError) or message.startswith(
                _UNAVAILABLE_REPLIES
            ):
                return error(f"Redis at {self.url} refused {what} ({message})")
        return None

    def _scripts(self, clients: _Clients) -> Scripts:
        return clients.flagged if self._flags else clients.legacy

    # -- server check -----------------------------------------------------------
    def check_server(self) -> None:
        """Refuse a server that may evict jobs.

        Reads ``CONFIG GET maxmemory-policy``: an ``allkeys-*`` policy raises
        :class:`~spoolhouse.errors.ConfigurationError` (an evicted job is a lost
        job); a ``volatile-*`` policy logs a warning. Servers that forbid
        ``CONFIG`` (managed services) are accepted with a warning. Called
        lazily on first use; the worker calls it at start.
        """
        self._check(self._current().main, BackendUnavailable)

    def _check(
        self,
        client: redis.Redis,
        error: type[BackendUnavailable],
        timeout: float | None = None,
    ) -> None:
        """First-use check: the server version (script flags) and the eviction policy."""
        with self._errors("the server check", error, timeout):
            pipe = client.pipeline(transaction=False)
            pipe.info("server")
            if self.check_eviction:
                pipe.config_get("maxmemory-policy")
            replies = pipe.execute(raise_on_error=False)
        info = replies[0]
        version = str(info.get("redis_version", "")) if isinstance(info, dict) else ""
        major = version.split(".", 1)[0]
        # Script flags (shebang) need Redis 7; without them scripts run in the old mode.
        self._flags = major.isdigit() and int(major) >= 7
        if self.check_eviction:
            self._check_policy(replies[1])
        self._checked = True

    def _check_policy(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            log.warning(
                "cannot read maxmemory-policy from Redis at %s (%s); make sure it is "
                "'noeviction', or an evicted job is a lost job",
                self.url,
                reply,
            )
            return
        policy = ""
        for name, value in cast(dict[Any, Any], reply).items():
            if _text(name) == "maxmemory-policy":
                policy = _text(value)
        if policy.startswith("allkeys-"):
            raise ConfigurationError(
                f"Redis at {self.url} has maxmemory-policy {policy!r}: when memory runs out it "
                "deletes keys, and an evicted job is a lost job. Run CONFIG SET "
                "maxmemory-policy noeviction (and set it in redis.conf), or use a Redis of "
                "its own for Spoolhouse; RedisBackend(check_eviction=False) skips this check"
            )
        if policy.startswith("volatile-"):
            log.warning(
                "Redis at %s has maxmemory-policy %r; Spoolhouse sets no TTLs so its keys are "
                "not evicted, but 'noeviction' is the safe setting",
                self.url,
                policy,
            )
        elif not policy:
            log.warning(
                "Redis at %s did not report its maxmemory-policy; make sure it is 'noeviction'",
                self.url,
            )

    # -- helpers ----------------------------------------------------------------
    def _run(self, name: str, args: Sequence[Any]) -> Any:
        """Run the script ``name`` on the main connection."""
        clients = self._ready()
        script = getattr(self._scripts(clients), name)
        with self._errors(name):
            return self._evalsha(clients.main, clients.idle_main, script, _bulk(args), len(args))

    @staticmethod
    def _jobs(reply: Any) -> list[Job]:
        return [decode_job(flat) for flat in reply]

    # -- producer ---------------------------------------------------------------
    def enqueue(self, job: Job, *, now: float) -> Job:
        if job.key is None and job.state == JobState.PENDING:
            # the common case: enqueue_one.lua, the job's hash and index entries worked
            # out by the client (no loop, no now, no _rk to build on the server)
            count, body = single_resp(job, now)
            reply = self._fenced("enqueue_one", None, body, count)
            return job if reply == 0 else decode_job(reply)
        return self._enqueue([job], now)[0]

    def enqueue_many(self, jobs: Sequence[Job], *, now: float) -> list[Job]:
        if not jobs:
            return []
        return self._enqueue(list(jobs), now)

    def enqueue_batch(self, batch: JobBatch, *, now: float) -> None:
        """:meth:`enqueue_many` of ``batch.jobs()`` for a batch without a unique key (see
        ``Backend.enqueue_many``), in one call of ``enqueue_batch.lua``: the fields the jobs
        share are sent once, then each job's id and ``_d``; the same hashes and index
        entries as :meth:`enqueue_many`, atomic, with the same deadline."""
        template = batch.template
        if template.key is not None:
            raise ValueError("enqueue_batch: the batch has a unique key; use enqueue_many")
        if not batch.ids:
            return
        if template.state != JobState.PENDING:
            self._enqueue(batch.jobs(), now)
            return
        count, body = batch_resp(template, batch.ids, batch.payloads, batch.headers)
        self._fenced("enqueue_batch", now, body, count)

    @staticmethod
    def _job_args(job: Job) -> list[bytes | str | int]:
        """``id, m, field, value, ...``: one job as the enqueue scripts read it."""
        fields = encode_job(job)
        fields += ["_rk", order_key(job.run_at) + job.id]
        return [job.id, len(fields), *fields]

    @staticmethod
    def _job_resp(job: Job) -> tuple[int, bytes]:
        """:meth:`_job_args` as RESP bulk strings: (how many, the bytes)."""
        count, fields = encode_job_resp(job)
        rk = order_key(job.run_at).encode() + job.id.encode()
        head = _bulk([job.id, count + 2])
        return count + 4, b"%s%s$3\r\n_rk\r\n$%d\r\n%s\r\n" % (head, fields, len(rk), rk)

    def _enqueue(self, jobs: list[Job], now: float) -> list[Job]:
        # Encode everything first: a job that cannot be stored fails before any I/O.
        body: list[bytes] = [_bulk([len(jobs)])]
        count = 1
        for job in jobs:
            n, packed = self._job_resp(job)
            body.append(packed)
            count += n
        reply = self._fenced("enqueue", now, b"".join(body), count)
        return [
            job if entry == 0 else decode_job(entry) for job, entry in zip(jobs, reply, strict=True)
        ]

    def _fenced(self, name: str, now: float | None, body: bytes, count: int) -> Any:
        """Run the enqueue script ``name`` on the producer pool with ``now`` (None: not
        sent, for ``enqueue_one.lua``), a deadline and ``body`` (``count`` RESP bulk
        strings, already encoded: a job that cannot be stored failed before any I/O);
        raise ``EnqueueTimeout`` when it ran late."""
        clients = self._current()
        bound = self.enqueue_timeout
        offset = self._offset
        if (
            offset is None
            or not self._checked
            or time.monotonic() - self._offset_at > OFFSET_TTL
        ):
            offset = self._prepare_enqueue(clients, bound)
        # The script refuses to run once the server's clock passes the moment this
        # client stops waiting: a timed-out enqueue never lands later (a stalled server
        # that resumes would otherwise store a job the caller saw fail).
        deadline = _micros(time.time() + offset + bound).encode()
        if now is None:
            argv = b"$%d\r\n%s\r\n%s" % (len(deadline), deadline, body)
            count += 1
        else:
            raw_now = float_bytes("now", now)
            argv = b"$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (
                len(raw_now), raw_now, len(deadline), deadline, body
            )
            count += 2
        try:
            reply = self._evalsha(
                clients.producer,
                clients.idle_producer,
                getattr(self._scripts(clients), name),
                argv,
                count,
            )
        except redis.exceptions.RedisError as exc:
            translated = self._translate(exc, "the enqueue", EnqueueTimeout, bound)
            if translated is None:
                raise
            raise translated from exc
        if reply == b"late":
            self._offset = None
            raise EnqueueTimeout(
                f"Redis at {self.url} ran the enqueue after its deadline (the server's clock "
                "moved, or the server stalled); nothing was stored. Retrying is safe"
            )
        return reply

    def _prepare_enqueue(self, clients: _Clients, bound: float) -> float:
        """The one-time preliminaries of an enqueue (the server check) and the clock
        offset, measured again every :data:`OFFSET_TTL` seconds; each round trip is bounded
        by ``bound``, and an enqueue they leave no time for is abandoned (nothing sent)."""
        started = time.monotonic()
        if not self._checked:
            self._check(clients.producer, EnqueueTimeout, bound)
        with self._errors("the enqueue", EnqueueTimeout, bound):
            offset = self._server_offset(clients.producer)
        if time.monotonic() - started >= bound:
            raise EnqueueTimeout(
                f"Redis at {self.url} answered too slowly to enqueue within {bound:g} s; "
                "nothing was stored"
            )
        return offset

    def _evalsha(
        self, client: redis.Redis, idle: list[Any], script: Any, argv: bytes, count: int
    ) -> Any:
        """Run ``script`` with the declared key, the root and ``argv`` (``count`` RESP bulk
        strings) on a connection of ``client``'s pool, kept in ``idle`` between calls.

        Same outcome as ``Script.__call__``, with less Python.
        """
        # A read-only script on Redis 7 runs as FCALL_RO or EVALSHA_RO: a paused server
        # (CLIENT PAUSE WRITE) holds back a call it must take for a write (an unknown
        # script, or a function not loaded yet), but answers the _RO forms (an error,
        # and then EVAL_RO runs the source).
        read_only = script.sha in _READ_ONLY_SHAS
        function = self._flags and self._functions
        key = ("f" if function else "s") + script.sha
        head = self._heads.get(key)
        if head is None:
            declared = self.keys.declared
            if function:
                command = "FCALL_RO" if read_only else "FCALL"
                target = _function_names()[script.sha]
            else:
                command, target = ("EVALSHA_RO" if read_only else "EVALSHA"), script.sha
            head = _bulk([command, target, len(declared), *declared, self.keys.root])
            self._heads[key] = head
        packed = b"*%d\r\n%s%s" % (5 + count, head, argv)
        pool = client.connection_pool
        try:
            conn = idle.pop()
        except IndexError:
            conn = pool.get_connection()
        try:
            try:
                stale = conn.can_read()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                stale = True
            if stale:
                # a reply nobody asked for, or the server closed the connection (it was
                # restarted, or dropped an idle client): start afresh, as the pool does
                conn.disconnect()
            conn.send_packed_command((packed,), check_health=False)
            try:
                reply = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                # not loaded (a new, restarted or flushed server): nothing ran. Load the
                # functions and call again, or send the script's source with EVAL
                # (EVAL_RO), which also caches it: a read-only script then runs at once on
                # a paused server, which would hold FUNCTION LOAD or SCRIPT LOAD back
                if isinstance(exc, redis.exceptions.NoScriptError):
                    pass
                elif not (function and str(exc).startswith("Function not found")):
                    raise
                elif not read_only and self._load_library(conn):
                    conn.send_packed_command((packed,), check_health=False)
                    return self._kept(idle, conn, conn.read_response())
                declared = self.keys.declared
                command = "EVAL_RO" if read_only else "EVAL"
                source = _bulk([command, script.script, len(declared), *declared, self.keys.root])
                conn.send_packed_command(
                    (b"*%d\r\n%s%s" % (5 + count, source, argv),), check_health=False
                )
                reply = conn.read_response()
        except redis.exceptions.ResponseError:
            idle.append(conn)  # an error reply leaves the connection in step
            raise
        except BaseException:
            conn.disconnect()  # a reply may still be on its way
            pool.release(conn)
            raise
        idle.append(conn)
        return reply

    @staticmethod
    def _kept(idle: list[Any], conn: Any, reply: Any) -> Any:
        idle.append(conn)
        return reply

    def _load_library(self, conn: Any) -> bool:
        """``FUNCTION LOAD`` the scripts' library on ``conn``; False when it cannot be
        loaded now (out of memory, a replica) or ever (no permission: then no more tries)."""
        name, text = library()
        conn.send_packed_command(conn.pack_command("FUNCTION", "LOAD", text), check_health=False)
        try:
            conn.read_response()
        except redis.exceptions.ResponseError as exc:
            if "already exists" in str(exc):
                return True  # another process loaded it meanwhile
            if isinstance(exc, redis.exceptions.NoPermissionError):
                log.warning("cannot load the Redis functions %s (%s); using EVALSHA", name, exc)
                self._functions = False
            return False
        return True

    def _server_offset(self, client: redis.Redis) -> float:
        """Seconds to add to this host's clock to get the server's (``TIME``), refreshed now and then."""
        offset, measured = self._offset, self._offset_at
        if offset is None or time.monotonic() - measured > OFFSET_TTL:
            before = time.time()
            seconds, micros = client.time()
            after = time.time()
            offset = seconds + micros / 1_000_000 - (before + after) / 2
            self._offset, self._offset_at = offset, time.monotonic()
        return offset

    def _claim_offset(self, client: redis.Redis) -> float:
        """:meth:`_server_offset` for claims sent ahead: the best of three ``TIME`` round
        trips (the one that took least), refreshed every :data:`OFFSET_TTL` seconds."""
        offset, measured = self._precise_offset, self._precise_offset_at
        if offset is None or time.monotonic() - measured > OFFSET_TTL:
            best = math.inf
            for _ in range(3):
                before = time.time()
                seconds, micros = client.time()
                after = time.time()
                if after - before < best:
                    best = after - before
                    offset = seconds + micros / 1_000_000 - (before + after) / 2
            assert offset is not None
            self._precise_offset, self._precise_offset_at = offset, time.monotonic()
        return offset

    # -- worker -----------------------------------------------------------------
    def claim(
        self,
        queues: Sequence[str],
        *,
        worker_id: str,
        now: float,
        lease: float,
        limit: int = 1,
        limits: Mapping[str, TaskLimit] | None = None,
    ) -> list[Job]:
        if limit <= 0 or not queues:
            return []
        rules = _limits_json(limits)
        context = (worker_id, tuple(queues), float(lease), rules)
        ahead = self._take_ahead(context, now, limit)
        if ahead:
            return ahead
        args = _claim_args(float_text(now), float_text(now + lease), context, limit)
        jobs = self._jobs(self._run("claim", args))
        # a claim that found nothing is usually followed by wait() on the same queues
        self._idle_claim = None if jobs else (context, limit)
        return jobs

    def _take_ahead(
        self, context: tuple[str, tuple[str, ...], float, str], now: float, limit: int
    ) -> list[Job]:
        """The jobs a :meth:`wait` claimed ahead, when this claim asks for what that claim
        was sent for (same worker, queues, lease and limits, ``now`` within
        :data:`AHEAD_SKEW` of its time, at most ``limit`` jobs); the others are released."""
        with self._ahead_lock:
            ahead, self._ahead = self._ahead, None
        if ahead is None:
            return []
        sent_for, jobs = ahead
        started = jobs[0].started_at or 0.0
        if sent_for == context and started - AHEAD_EARLY <= now <= started + AHEAD_SKEW:
            keep, extra = jobs[:limit], jobs[limit:]
        else:
            keep, extra = [], jobs
        for job in extra:
            self.release(job.id, job.lease or "", now=now)
        return keep

    def extend_leases(
        self, leases: Mapping[str, str], *, now: float, lease: float
    ) -> dict[str, LeaseState]:
        if not leases:
            return {}
        pairs = list(leases.items())
        args: list[str] = [float_text(now + lease)]
        for job_id, token in pairs:
            args += [job_id, token]
        reply = self._run("extend_leases", args)
        return {
            job_id: LeaseState(state.decode())
            for (job_id, _), state in zip(pairs, reply, strict=True)
        }

    def set_progress(self, job_id: str, token: str, progress: str) -> LeaseState:
        reply = self._run("set_progress", [job_id, token, progress])
        return LeaseState(reply.decode())

    def complete(
        self, job_id: str, token: str, *, now: float, result: bytes | None, expires_at: float | None
    ) -> bool:
        return self.complete_many([(job_id, token, result, expires_at)], now=now)[0]

    def complete_many(
        self, items: Sequence[tuple[str, str, bytes | None, float | None]], *, now: float
    ) -> list[bool]:
        """One script call for the whole batch (atomic, and one round trip)."""
        if not items:
            return []
        args: list[bytes | str | int] = [float_text(now), _minute(now), len(items)]
        for job_id, token, result, expires_at in items:
            args += [
                job_id,
                token,
                "0" if result is None else "1",
                b"" if result is None else bytes(result),
                "" if expires_at is None else float_text(expires_at),
            ]
        reply = self._run("complete", args)
        return [bool(flag) for flag in reply]

    def retry(
        self, job_id: str, token: str, *, now: float, run_at: float, error: str, count: bool = True
    ) -> bool:
        args = [
            float_text(now),
            job_id,
            token,
            float_text(run_at),
            order_key(run_at),
            error,
            "1" if count else "0",
            _minute(now),
        ]
        return bool(self._run("retry", args))

    def fail(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        args = [
            float_text(now),
            job_id,
            token,
            error,
            "" if expires_at is None else float_text(expires_at),
            _minute(now),
        ]
        return bool(self._run("fail", args))

    def abort(
        self, job_id: str, token: str, *, now: float, error: str, expires_at: float | None
    ) -> bool:
        args = [
            float_text(now),
            job_id,
            token,
            error,
            "" if expires_at is None else float_text(expires_at),
        ]
        return bool(self._run("abort", args))

    def release(self, job_id: str, token: str, *, now: float) -> bool:
        return bool(self._run("release", [float_text(now), job_id, token]))

    def rescue(
        self,
        job_id: str,
        token: str,
        *,
        now: float,
        max_lost: int,
        error: str,
        expires_at: float | None = None,
    ) -> Job | None:
        expiry = "" if expires_at is None else float_text(expires_at)
        args = [float_text(now), job_id, token, max_lost, error, expiry, _minute(now)]
        reply = self._run("rescue", args)
        return None if reply == 0 else decode_job(reply)

    def rescue_expired(
        self, *, now: float, max_lost: int, error: str, expires_at: float | None = None
    ) -> list[Job]:
        expiry = "" if expires_at is None else float_text(expires_at)
        args = [float_text(now), max_lost, error, RESCUE_BATCH, expiry, _minute(now)]
        out: list[Job] = []
        while True:
            batch = self._jobs(self._run("rescue_expired", args))
            out += batch
            if len(batch) < RESCUE_BATCH:
                return out

    def next_due(self, queues: Sequence[str], *, now: float) -> float | None:
        if not queues:
            return None
        reply = self._run("next_due", list(queues))
        return None if reply is None else float(reply)

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block on the queues' wake lists (BLPOP) for up to ``timeout`` seconds.

        Blocks at most :data:`MAX_BLOCK` seconds per call (returning early is
        allowed). Raises :class:`~spoolhouse.errors.BackendUnavailable` when
        Redis cannot be reached, so the caller decides how to back off.
        """
        if not queues or not timeout > 0:
            return
        clients = self._ready()
        # Redis reads the timeout in milliseconds and treats 0 as "forever".
        block = max(math.ceil(min(timeout, MAX_BLOCK) * 1000) / 1000, 0.001)
        wake = [self.keys.wake(q) for q in queues]
        idle = self._idle_claim
        if idle is None or idle[0][1] != tuple(queues):
            with self._errors("a wait"):
                clients.blocking.blpop(wake, timeout=block)
            return
        with self._errors("a wait"):
            self._wait_and_claim(clients, wake, block, *idle)

    def _wait_and_claim(
        self,
        clients: _Clients,
        wake: list[str],
        block: float,
        context: tuple[str, tuple[str, ...], float, str],
        limit: int,
    ) -> None:
        """``BLPOP`` and, sent behind it in the same write, the claim that would follow.

        Redis runs the claim as soon as the ``BLPOP`` returns (a token, or the timeout),
        before it sleeps again, and sends both replies together: a woken worker has its
        job without a round trip of its own. The claim takes ``now`` from the server's
        clock less this host's offset (``T`` in ``claim.lua``), as this host's clock
        would read then; :meth:`claim` hands its jobs over when called for the same
        context (see :meth:`_take_ahead`).
        """
        offset = self._claim_offset(clients.main)
        script = self._scripts(clients).claim
        args = _claim_args("T" + repr(offset - AHEAD_EARLY), repr(context[2]), context, limit)
        declared = self.keys.declared
        if self._flags and self._functions:
            command, target = "FCALL", _function_names()[script.sha]
        else:
            command, target = "EVALSHA", script.sha
        claim = _bulk([command, target, len(declared), *declared, self.keys.root, *args])
        blpop = _bulk(["BLPOP", *wake, repr(block)])
        pool = clients.blocking.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command(
                (b"*%d\r\n%s*%d\r\n%s" % (len(wake) + 2, blpop, 5 + len(args), claim),),
                check_health=False,
            )
            conn.read_response()  # the token (or None): nothing to do with it
            try:
                reply = conn.read_response()
            except redis.exceptions.ResponseError as exc:
                if not isinstance(exc, redis.exceptions.NoScriptError) and not str(
                    exc
                ).startswith("Function not found"):
                    raise
                reply = []  # not loaded yet: nothing ran, the next claim loads it
        except BaseException:
            conn.disconnect()  # a reply may still be on its way; the claimed jobs, if
            pool.release(conn)  # any, are leased to nobody and rescued when it expires
            raise
        pool.release(conn)
        jobs = self._jobs(reply)
        if jobs:
            with self._ahead_lock:
                stale, self._ahead = self._ahead, (context, jobs)
            if stale is not None:  # never taken (no claim came): give them back
                for job in stale[1]:
                    self.release(job.id, job.lease or "", now=time.time())

    # -- periodic tasks -----------------------------------------------------------
    def schedule_tick(self, name: str, tick: float, job: Job, *, now: float) -> Job | None:
        args = [float_text(now), name, float_text(tick), *self._job_args(job)]
        reply = self._run("schedule_tick", args)
        if reply == -1:
            return None
        return job if reply == 0 else decode_job(reply)

    def schedule_ticks(self) -> dict[str, float]:
        clients = self._ready()
        with self._errors("schedule_ticks"):
            raw = clients.main.hgetall(self.keys.ticks)
        return {name.decode(): float(value) for name, value in pairs(raw)}

    # -- operator ---------------------------------------------------------------
    def cancel(self, job_id: str, *, now: float) -> CancelResult:
        reply = self._run("cancel", [float_text(now), job_id])
        return CancelResult(reply.decode())

    def requeue(self, job_id: str, *, now: float) -> bool:
        args = [float_text(now), job_id, order_key(now)]
        return bool(self._run("requeue", args))

    def prune(self, *, now: float, limit: int = 1000) -> int:
        """Delete expired final jobs; also drop stats older than :data:`STATS_RETENTION`."""
        if limit <= 0:
            return 0
        keep = _minute(now - STATS_RETENTION)
        return int(self._run("prune", [float_text(now), limit, keep, STATS_TRIM_BATCH]))

    def purge(
        self, *, states: Sequence[str], queue: str | None = None, before: float | None = None
    ) -> int:
        """Delete final jobs in batches; each batch is atomic, the whole purge is not."""
        wanted = {JobState(s).value for s in states} & _FINAL_VALUES
        deleted = 0
        for state, queue_name in self._indexes(wanted, None if queue is None else {queue}):
            start: bytes | str = "-"
            while start:
                args = [
                    state,
                    start,
                    PURGE_BATCH,
                    queue_name,
                    "" if before is None else float_text(before),
                ]
                n, start = self._run("purge", args)
                deleted += int(n)
        return deleted

    def _indexes(
        self, states: set[str] | None, queues: set[str] | None
    ) -> list[tuple[str, str]]:
        """The (state, queue) pairs of a ``jobs:`` index, for every state (or those of
        ``states``) and every queue of the ``queues`` directory (or those of ``queues``)."""
        if queues is None:
            clients = self._ready()
            with self._errors("the queue list"):
                queues = {_text(q) for q in clients.main.smembers(self.keys.queues)}
        return sorted(
            (state, queue)
            for state in (_STATE_VALUES if states is None else states)
            for queue in queues
        )

    def delete(self, job_ids: Sequence[str]) -> int:
        """Delete the listed final jobs, :data:`DELETE_BATCH` ids per atomic script call."""
        unique = list(dict.fromkeys(job_ids))
        deleted = 0
        for start in range(0, len(unique), DELETE_BATCH):
            deleted += int(self._run("delete", unique[start : start + DELETE_BATCH]))
        return deleted

    # -- inspection -------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        clients = self._ready()
        with self._errors("get"):
            flat = clients.main.hgetall(self.keys.job(job_id))
        return decode_job(flat) if flat else None

    def list_jobs(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        task: str | None = None,
        key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[Job]:
        """Newest first, read page by page from the id indexes (not a snapshot).

        The index is ``bykey:<key>`` when ``key`` is given (the jobs of one key are
        few), else the ``jobs:<state>:<queue>`` sets that match ``state`` and
        ``queue`` (every queue of the ``queues`` directory unless ``queue`` is given),
        merged: each page reads the next ids of every set and keeps the newest. The other filters are applied to the jobs read.
        """
        if limit <= 0 or (state is not None and state not in _STATE_VALUES):
            return []
        clients = self._ready()
        if key is not None:
            indexes = [self.keys.bykey(key)]
        else:
            pairs_ = self._indexes(
                None if state is None else {state}, None if queue is None else {queue}
            )
            indexes = [self.keys.jobs(s, q) for s, q in pairs_]
        if not indexes:
            return []
        batch = max(limit, 50)
        high = "+" if cursor is None else "(" + cursor
        out: list[Job] = []
        with self._errors("list_jobs"):
            while len(out) < limit:
                ids = self._newest(clients.main, indexes, high, batch)
                if not ids:
                    break
                pipe = clients.main.pipeline(transaction=False)
                for raw in ids:
                    pipe.hgetall(self.keys.job(_text(raw)))
                for flat in pipe.execute():
                    if not flat:
                        continue  # deleted since the index was read
                    job = decode_job(flat)
                    if (
                        (state is None or job.state == state)
                        and (queue is None or job.queue == queue)
                        and (task is None or job.task == task)
                        and (key is None or job.key == key)
                    ):
                        out.append(job)
                if len(ids) < batch:
                    break
                high = "(" + _text(ids[-1])
        return out[:limit]

    @staticmethod
    def _newest(client: redis.Redis, indexes: list[str], high: str, batch: int) -> list[bytes]:
        """The ``batch`` greatest ids below ``high`` in the union of ``indexes``, greatest first."""
        if len(indexes) == 1:
            return cast(list[bytes], client.zrevrangebylex(indexes[0], high, "-", start=0, num=batch))
        pipe = client.pipeline(transaction=False)
        for index in indexes:
            pipe.zrevrangebylex(index, high, "-", start=0, num=batch)
        merged = sorted({i for ids in pipe.execute() for i in ids}, reverse=True)
        return merged[:batch]

    def stats(self, *, since: float) -> list[tuple[float, int, int, int]]:
        """Outcomes per minute from ``since`` on, one script call (see ``lua/stats.lua``)."""
        if math.isnan(since) or since == math.inf:
            return []
        first = "-inf" if since == -math.inf else str(int(since // 60))
        flat = self._run("stats", [first])
        out: list[tuple[float, int, int, int]] = []
        for i in range(0, len(flat) - 3, 4):
            minute = int(flat[i])
            out.append((minute * 60.0, int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3])))
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """The sizes of the ``jobs:`` sets of every queue in the directory: one read-only
        script (a snapshot, as the one hash of counts was before)."""
        flat = self._run("counts", sorted(_STATE_VALUES))
        out: dict[str, dict[str, int]] = {}
        for i in range(0, len(flat) - 2, 3):
            out.setdefault(_text(flat[i]), {})[_text(flat[i + 1])] = int(flat[i + 2])
        return out

    # -- lifecycle ----------------------------------------------------------------
    def release_ahead(self) -> int:
        """Give back the jobs a :meth:`wait` claimed ahead that no claim took; return how
        many. A worker calls it when its loop ends, so that they run elsewhere now
        instead of after their lease expires (each such expiry counts as a lost run)."""
        with self._ahead_lock:
            ahead, self._ahead = self._ahead, None
        released = 0
        if ahead is not None:  # claimed by a wait, never taken: give them back
            for job in ahead[1]:
                try:
                    released += self.release(job.id, job.lease or "", now=time.time())
                except BackendUnavailable:
                    log.warning("could not give back job %s; it runs when its lease expires", job.id)
        return released

    def close(self) -> None:
        self.release_ahead()
        with self._lock:
            clients, self._clients = self._clients, None
        if clients is not None and clients.pid == os.getpid():
            for client in (clients.main, clients.producer, clients.blocking):
                client.connection_pool.disconnect()

    def destroy(self) -> None:
        """Delete every key of this prefix (SCAN + UNLINK in batches); for tests and teardown."""
        clients = self._current()
        with self._errors("destroy"):
            batch: list[bytes] = []
            for key in clients.main.scan_iter(match=self.keys.pattern, count=DESTROY_BATCH):
                batch.append(key)
                if len(batch) >= DESTROY_BATCH:
                    clients.main.unlink(*batch)
                    batch = []
            if batch:
                clients.main.unlink(*batch)
