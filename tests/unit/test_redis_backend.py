"""Redis backend specifics the contract suite does not cover.

URL handling and password masking, exact encoding, the key namespace (one
Cluster slot, Lua headers), wake-up latency across processes, the eviction
policy check against a private ``redis-server``, fork safety, the enqueue
deadline fence and the batching paths of the scripts. Tests that need a
server use the shared one under their own prefix (and delete only their keys),
or start a private one on a free port and kill it by PID.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import SSLConnection, UnixDomainSocketConnection

from redis_server import PrivateRedis, free_port
from spoolhouse.backends import open_backend
from spoolhouse.backends.redis import RedisBackend
from spoolhouse.backends.redis import backend as backend_module
from spoolhouse.backends.redis.backend import mask_url
from spoolhouse.backends.redis.codec import decode_job, encode_job, encode_job_resp, order_key
from spoolhouse.backends.redis.keys import WAKE_MAX, Keyspace, lua_prelude
from spoolhouse.backends.redis.scripts import NAMES, inline_builders, shake, source
from spoolhouse.errors import BackendUnavailable, ConfigurationError, EnqueueTimeout, StorageFull
from spoolhouse.job import Job, JobState, new_job_id

# The same rules as tests/conftest.py (importing it as ``conftest`` is ambiguous
# once a test folder has a conftest of its own).
REDIS_URL = os.environ.get("SPOOLHOUSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_redis() -> None:
    """Skip (locally) or fail (in CI) when no Redis server answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
        return
    except redis.exceptions.RedisError:
        pass
    message = f"no Redis server answers at {REDIS_URL} (set SPOOLHOUSE_TEST_REDIS_URL)"
    if IN_CI:
        pytest.fail(message + "; in CI a missing service is a failure")
    pytest.skip(message)


NOW = 1_700_000_000.0
LUA_DIR = Path(__file__).resolve().parents[2] / "src/spoolhouse/backends/redis/lua"


def make_job(**fields: Any) -> Job:
    fields.setdefault("task", "t")
    fields.setdefault("queue", "default")
    fields.setdefault("payload", b"[[], {}]")
    fields.setdefault("run_at", NOW)
    return Job(id=new_job_id(), **fields)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    started: list[PrivateRedis] = []

    def start(*options: str) -> PrivateRedis:
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        server = PrivateRedis(directory, *options)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def rb() -> Iterator[RedisBackend]:
    """A backend on the shared Redis under a prefix of its own."""
    require_redis()
    b = RedisBackend(REDIS_URL, prefix=f"shtest-{uuid.uuid4().hex[:12]}")
    try:
        yield b
    finally:
        b.destroy()
        b.close()


# -- URL handling -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/2", "redis://user:***@host/2"),
        (
            "rediss://user:p%40ss@host:6380/0?ssl_cert_reqs=none",
            "rediss://user:***@host:6380/0?ssl_cert_reqs=none",
        ),
        ("unix:///run/redis.sock?db=2&password=s3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("redis://onlyuser@host/0", "redis://onlyuser@host/0"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    b = RedisBackend(url)
    assert b.url == shown
    assert "s3cret" not in repr(b)


def test_url_options_reach_the_connections() -> None:
    b = RedisBackend("redis://user:pw@db.example:1234/3?socket_timeout=1.5", enqueue_timeout=0.75)
    clients = b._current()  # pools are built lazily and connect on first command
    main = clients.main.connection_pool.connection_kwargs
    assert (main["host"], main["port"], main["db"]) == ("db.example", 1234, 3)
    assert (main["username"], main["password"]) == ("user", "pw")
    assert main["socket_timeout"] == 1.5
    assert main["retry"].get_retries() == 0
    producer = clients.producer.connection_pool.connection_kwargs
    assert producer["socket_timeout"] == 0.75
    assert producer["socket_connect_timeout"] == 0.75
    assert producer["retry"].get_retries() == 0
    blocking = clients.blocking.connection_pool.connection_kwargs
    assert blocking["socket_timeout"] > backend_module.MAX_BLOCK
    assert blocking["client_name"] == b.wait_client_name


def test_tls_and_unix_socket_urls() -> None:
    tls = RedisBackend("rediss://host:6380/0")._current().main.connection_pool
    assert tls.connection_class is SSLConnection
    unix = RedisBackend("unix:///run/redis.sock?db=4")._current().main.connection_pool
    assert unix.connection_class is UnixDomainSocketConnection
    assert unix.connection_kwargs["path"] == "/run/redis.sock"
    assert unix.connection_kwargs["db"] == 4


def test_open_backend_builds_a_redis_backend() -> None:
    b = open_backend("redis://127.0.0.1:6379/0", prefix="p1", enqueue_timeout=1.0)
    assert isinstance(b, RedisBackend)
    assert b.prefix == "p1" and b.enqueue_timeout == 1.0


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("http://host/0", {}),
        ("redis://host/0", {"prefix": "a{b}"}),
        ("redis://host/0", {"prefix": ""}),
        ("redis://host/0", {"enqueue_timeout": 0}),
        ("redis://host/0", {"socket_timeout": -1}),
        ("redis://host/0", {"enqueue_timeout": math.nan}),
    ],
)
def test_bad_configuration_is_refused_up_front(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend(url, **options)


def test_unreachable_server_fails_fast_with_typed_errors() -> None:
    port = free_port()  # nothing listens there
    b = RedisBackend(f"redis://:s3cret@127.0.0.1:{port}/0", prefix="nowhere")
    started = time.monotonic()
    with pytest.raises(EnqueueTimeout) as info:
        b.enqueue(make_job(), now=NOW)
    assert "s3cret" not in str(info.value)
    with pytest.raises(BackendUnavailable):
        b.get(new_job_id())
    with pytest.raises(BackendUnavailable):
        b.wait(["default"], 1.0)
    assert time.monotonic() - started < 2.0


# -- encoding -------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=True)


@given(finite, finite)
def test_order_key_preserves_numeric_order(a: float, b: float) -> None:
    ka, kb = order_key(a), order_key(b)
    assert len(ka) == len(kb) == 16
    if a < b:
        assert ka < kb
    elif a > b:
        assert ka > kb
    elif a == b and math.copysign(1, a) == math.copysign(1, b):
        assert ka == kb


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.binary(),
    st.booleans(),
    st.one_of(st.none(), st.text()),
)
def test_codec_round_trips(
    run_at: float, ttl: float | None, prio: int, data: bytes, flag: bool, headers: str | None
) -> None:
    job = make_job(
        run_at=run_at,
        result_ttl=ttl,
        priority=prio,
        payload=data,
        abort_requested=flag,
        key="k\u2713",
        headers=headers,
    )
    flat = encode_job(job)
    assert decode_job([v.encode() if isinstance(v, str) else v for v in flat]) == job
    # what the enqueue sends: the same values, as RESP bulk strings
    assert encode_job_resp(job) == (len(flat), backend_module._bulk(flat))
    assert RedisBackend._job_resp(job) == (
        len(RedisBackend._job_args(job)),
        backend_module._bulk(RedisBackend._job_args(job)),
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"payload": "text"},
        {"run_at": "soon"},
        {"priority": 1.5},
        {"attempt": True},
        {"task": b"bytes"},
        {"run_at": math.nan},
    ],
)
def test_codec_rejects_wrong_types(fields: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_job(make_job(**fields))
    with pytest.raises((TypeError, ValueError)):
        encode_job_resp(make_job(**fields))


# -- key namespace and scripts ----------------------------------------------------------


def test_every_script_file_opens_with_its_header() -> None:
    files = {p.stem for p in LUA_DIR.glob("*.lua")} - {"_lib"}
    assert files == set(NAMES)
    for name in (*NAMES, "_lib"):
        text = (LUA_DIR / f"{name}.lua").read_text()
        head = text.split("\n\n", 1)[0]
        assert head.startswith(f"-- {name}.lua:"), name
        assert "-- KEYS:" in head and ("-- ARGV:" in head or "ARGV[1]" in head), name
        if name != "_lib":
            assert "-- Returns:" in head and "-- Invariants:" in head, name


def test_scripts_compile(rb: RedisBackend) -> None:
    client = rb._current().main
    for name in NAMES:
        assert client.script_load(source(name))
    rb.counts()  # the first use reads the server version
    version = str(client.info("server")["redis_version"])
    assert rb._flags is (int(version.split(".")[0]) >= 7)
    if rb._flags:
        for name in NAMES:
            assert client.script_load(source(name, flags=True))
            makes_jobs = name in ("enqueue", "enqueue_batch", "enqueue_one", "schedule_tick")
            assert source(name, flags=True).startswith("#!lua") is not makes_jobs


def test_shake_keeps_what_a_script_uses_in_order() -> None:
    library = (
        "-- header\n"
        "local ROOT = ARGV[1]\n"
        "local K_A = KEYS[1]\n"
        "-- a builds keys\n"
        "local function a(x) return ROOT .. x end\n"
        "\n"
        "-- b is never used\n"
        "local function b() return K_A end\n"
        "\n"
        "-- c uses a\n"
        "local function c(y)\n"
        "  return a(y) -- the key\n"
        "end\n"
    )
    kept = shake(library, "-- mentions b only in a comment\nreturn c('z')\n")
    assert kept == (
        "-- header\n"
        "local ROOT = ARGV[1]\n"
        "-- a builds keys\n"
        "local function a(x) return ROOT .. x end\n"
        "\n"
        "-- c uses a\n"
        "local function c(y)\n"
        "  return a(y) -- the key\n"
        "end\n"
    )
    assert shake(library, "return 0") == "-- header\n"
    assert shake("-- nothing defined\n", "return 0") == "-- nothing defined\n"


def test_key_builders_are_written_out() -> None:
    assert inline_builders("x = k_job(ARGV[i]) .. k_jobs('a(b') .. k_ready(k_sched(f[1]))") == (
        "x = (ROOT .. 'job:' .. (ARGV[i])) .. (ROOT .. 'jobs:' .. ('a(b')) .. "
        "(ROOT .. 'ready:' .. ((ROOT .. 'sched:' .. (f[1]))))"
    )
    assert inline_builders("my_k_job(x) t.k_job(x)") == "my_k_job(x) t.k_job(x)"
    with pytest.raises(ValueError):
        inline_builders("k_job(a,\n b)")
    for name in NAMES:
        assert "k_job(" not in source(name) and "local function k_" not in source(name)


def test_every_script_gets_the_library_functions_it_calls() -> None:
    for name in NAMES:
        text = source(name)
        for called in ("index", "unindex", "put_job", "wake_up", "held", "tally", "delete_job"):
            if f"{called}(" in (LUA_DIR / f"{name}.lua").read_text():
                assert f"local function {called}(" in text, (name, called)
    assert "local function delete_job(" not in source("enqueue")
    assert "local function held(" not in source("enqueue")


def test_all_keys_of_a_spooler_share_one_cluster_slot(rb: RedisBackend) -> None:
    jobs = [make_job(queue=q, key=f"k{i}") for i, q in enumerate(["a", "b:c", "d{e}"])]
    rb.enqueue_many(jobs, now=NOW)
    rb.enqueue(make_job(run_at=NOW + 60), now=NOW)
    [claimed] = rb.claim(["a"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease is not None
    rb.complete(claimed.id, claimed.lease, now=NOW, result=b"r", expires_at=NOW + 10)
    client = rb._current().main
    keys = list(client.scan_iter(match=rb.keys.pattern, count=1000))
    assert len(keys) > 10
    assert {redis.crc.key_slot(k) for k in keys} == {
        redis.crc.key_slot(b"{" + rb.prefix.encode() + b"}")
    }


def test_destroy_deletes_only_its_own_prefix() -> None:
    require_redis()
    base = f"shtest-{uuid.uuid4().hex[:8]}"
    glob_like = RedisBackend(REDIS_URL, prefix=base + "-[a]*")  # glob characters are escaped
    neighbour = RedisBackend(REDIS_URL, prefix=base + "-a-x")
    try:
        glob_like.enqueue(make_job(), now=NOW)
        neighbour.enqueue(make_job(), now=NOW)
        glob_like.destroy()
        assert glob_like.counts() == {}
        assert neighbour.counts() == {"default": {"pending": 1}}
        client = glob_like._current().main
        assert list(client.scan_iter(match=glob_like.keys.pattern)) == []
    finally:
        for b in (glob_like, neighbour):
            b.destroy()
            b.close()


def test_keyspace_names() -> None:
    ks = Keyspace("app")
    assert ks.root == "{app}:"
    assert ks.job("x") == "{app}:job:x"
    assert ks.declared == ["{app}:queues"]
    prelude = lua_prelude(builders=False)
    assert "local K_UNIQ_DONE = ROOT .. 'uniq_done'" in prelude
    assert "KEYS" not in prelude
    assert ks.started("t.x") == "{app}:started:t.x"
    assert ks.jobs("pending", "a:b") == "{app}:jobs:pending:a:b"
    assert ks.bykey("order:7 {x}") == "{app}:bykey:order:7 {x}"
    assert (ks.stats, ks.stat_minutes) == ("{app}:stats", "{app}:stat_minutes")


# -- wake-up --------------------------------------------------------------------------


def _wait_until_blocked(b: RedisBackend, deadline: float) -> None:
    """Until a connection of ``b`` is blocked in BLPOP (CLIENT LIST), or fail at ``deadline``."""
    client = b._current().main
    while time.monotonic() < deadline:
        for entry in client.client_list():
            if entry.get("name") == b.wait_client_name and entry.get("cmd") == "blpop":
                return
        threading.Event().wait(0.002)
    pytest.fail("the waiter never blocked in BLPOP")


def _start_waiter(
    b: RedisBackend, queues: list[str], timeout: float
) -> tuple[threading.Thread, list[float]]:
    woke: list[float] = []

    def waiter() -> None:
        b.wait(queues, timeout)
        woke.append(time.time())

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    return thread, woke


PRODUCER = r"""
import sys, time
from spoolhouse.backends.redis import RedisBackend
from spoolhouse.job import Job, new_job_id
b = RedisBackend(sys.argv[1], prefix=sys.argv[2])
b.get("warm-up")  # connect and run the server check before the clock starts
b.enqueue(Job(id=new_job_id(), task="t", queue="other", payload=b""), now=time.time())
print("ready", flush=True)
sys.stdin.readline()
started = time.time()
b.enqueue(Job(id=new_job_id(), task="t", queue=sys.argv[3], payload=b""), now=started)
print(started, time.time(), flush=True)
"""


def test_wait_wakes_within_milliseconds_of_an_enqueue_from_another_process(
    rb: RedisBackend,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, REDIS_URL, rb.prefix, "mail"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        rb.wait(["mail"], 0.001)  # eat nothing; warms our connections
        thread, woke = _start_waiter(rb, ["mail", "sms"], 5.0)
        _wait_until_blocked(rb, time.monotonic() + 5)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        started, acked = map(float, proc.stdout.readline().split())
        thread.join(timeout=6)
        assert woke, "wait() did not return"
        latency = woke[0] - started
        assert latency < 0.05, f"woke {latency * 1000:.1f} ms after the enqueue started"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_wait_wakes_on_retry_and_other_queues_do_not_wake_it(rb: RedisBackend) -> None:
    rb.enqueue(make_job(max_attempts=3), now=NOW)
    [job] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert job.lease is not None
    rb.wait(["default"], 0.01)  # drain the enqueue's token
    thread, woke = _start_waiter(rb, ["default"], 5.0)
    _wait_until_blocked(rb, time.monotonic() + 5)
    rb.enqueue(make_job(queue="elsewhere"), now=NOW)
    thread.join(timeout=0.2)
    assert not woke
    started = time.time()
    assert rb.retry(job.id, job.lease, now=NOW, run_at=NOW + 60, error="{}")
    thread.join(timeout=6)
    assert woke and woke[0] - started < 0.05


def test_wait_times_out_and_tolerates_odd_timeouts(rb: RedisBackend) -> None:
    started = time.monotonic()
    rb.wait(["idle"], 0.2)
    assert 0.15 <= time.monotonic() - started < 2.0
    started = time.monotonic()
    rb.wait(["idle"], 0)
    rb.wait(["idle"], -1)
    rb.wait([], 10)
    rb.wait(["idle"], 0.0001)  # under a millisecond: never "block forever"
    assert time.monotonic() - started < 0.5


def test_a_batch_wakes_several_waiters(rb: RedisBackend) -> None:
    waiters = [_start_waiter(rb, ["bulk"], 5.0) for _ in range(3)]
    deadline = time.monotonic() + 5
    client = rb._current().main
    while (
        sum(
            1
            for e in client.client_list()
            if e.get("name") == rb.wait_client_name and e.get("cmd") == "blpop"
        )
        < 3
    ):
        assert time.monotonic() < deadline, "the waiters never blocked"
        threading.Event().wait(0.002)
    rb.enqueue_many([make_job(queue="bulk") for _ in range(3)], now=NOW)
    for thread, _ in waiters:
        thread.join(timeout=6)
    assert all(woke for _, woke in waiters)


# -- eviction policy check ----------------------------------------------------------------


def test_allkeys_policy_is_refused(private_redis: Any) -> None:
    server = private_redis("--maxmemory-policy", "allkeys-lru")
    b = RedisBackend(server.url, prefix="evict")
    with pytest.raises(ConfigurationError, match="noeviction"):
        b.check_server()
    with pytest.raises(ConfigurationError, match="evicted job is a lost job"):
        b.enqueue(make_job(), now=NOW)
    with pytest.raises(ConfigurationError):
        b.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert server.client().dbsize() == 0
    # the check can be turned off explicitly
    lax = RedisBackend(server.url, prefix="evict", check_eviction=False)
    lax.enqueue(make_job(), now=NOW)
    assert lax.counts() == {"default": {"pending": 1}}
    # and a fixed server is accepted by the same backend
    server.client().config_set("maxmemory-policy", "noeviction")
    b.check_server()
    assert b.counts() == {"default": {"pending": 1}}
    for backend in (b, lax):
        backend.close()


def test_volatile_policy_warns(private_redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = private_redis("--maxmemory-policy", "volatile-lru")
    b = RedisBackend(server.url, prefix="evict")
    with caplog.at_level(logging.WARNING, logger="spoolhouse.backends.redis"):
        b.enqueue(make_job(), now=NOW)
    assert "volatile-lru" in caplog.text
    b.close()


def test_forbidden_config_command_warns(
    private_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_redis("--rename-command", "CONFIG", "")
    b = RedisBackend(server.url, prefix="evict")
    with caplog.at_level(logging.WARNING, logger="spoolhouse.backends.redis"):
        b.check_server()
        b.enqueue(make_job(), now=NOW)
    assert "noeviction" in caplog.text
    assert b.counts() == {"default": {"pending": 1}}
    b.close()


def test_a_full_redis_refuses_enqueues_but_lets_workers_drain(private_redis: Any) -> None:
    server = private_redis("--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
    b = RedisBackend(server.url, prefix="full")
    big = b"x" * 50_000
    stored: list[Job] = []
    refused: Job | None = None
    for _ in range(200):
        job = make_job(payload=big)
        try:
            stored.append(b.enqueue(job, now=NOW))
        except StorageFull as exc:
            assert "maxmemory" in str(exc)
            refused = job
            break
    assert refused is not None, "Redis never filled up"
    assert b.get(refused.id) is None
    with pytest.raises(StorageFull):
        b.enqueue_many([make_job(), make_job()], now=NOW)
    with pytest.raises(StorageFull):
        b.schedule_tick("s", NOW, make_job(), now=NOW)
    assert b.schedule_ticks() == {}
    assert b.counts() == {"default": {"pending": len(stored)}}
    if not b._flags:
        pytest.skip("workers drain a full Redis only with Redis 7 script flags")
    # workers still claim, finish and prune, which frees memory for new jobs
    claimed = b.claim(["default"], worker_id="w", now=NOW, lease=30, limit=len(stored))
    assert len(claimed) == len(stored)
    for job in claimed:
        assert job.lease is not None
        assert b.complete(job.id, job.lease, now=NOW, result=None, expires_at=NOW)
    assert b.prune(now=NOW, limit=10_000) == len(stored)
    assert b.enqueue(refused, now=NOW).id == refused.id
    b.close()


# -- fork safety ----------------------------------------------------------------------------


def _child_enqueue(b: RedisBackend, job_id: str, parent_main: int) -> None:
    # the child must build its own pools instead of reusing the parent's sockets
    clients = b._current()
    assert id(clients.main) != parent_main
    b.enqueue(Job(id=job_id, task="t", queue="forked", payload=b"", run_at=NOW), now=NOW)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_connections_are_rebuilt_after_fork(rb: RedisBackend) -> None:
    rb.enqueue(make_job(), now=NOW)  # the parent has live connections
    parent_main = id(rb._current().main)
    job_id = new_job_id()
    proc = multiprocessing.get_context("fork").Process(
        target=_child_enqueue, args=(rb, job_id, parent_main)
    )
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == 0
    got = rb.get(job_id)
    assert got is not None and got.queue == "forked"
    assert id(rb._current().main) == parent_main


def test_enqueue_recovers_from_a_script_flush_and_a_dropped_connection(
    private_redis: Any,
) -> None:
    server = private_redis()
    b = RedisBackend(server.url, prefix="raw")
    admin = server.client()
    first = b.enqueue(make_job(), now=NOW)
    admin.script_flush()  # NOSCRIPT: the script is loaded again and the enqueue sent again
    second = b.enqueue(make_job(), now=NOW)
    # the server drops the producer's idle connection: the next enqueue reconnects
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    third = b.enqueue(make_job(), now=NOW)
    assert [j.id for j in b.list_jobs(limit=10)] == [third.id, second.id, first.id]
    assert b.enqueue_many([first, make_job(key="k"), make_job(key="k")], now=NOW)[0] == first
    assert b.counts() == {"default": {"pending": 4}}
    b.close()


def test_the_wake_list_never_outgrows_its_bound(rb: RedisBackend) -> None:
    client = rb._current().main
    wake = rb.keys.wake("default")
    for i in range(WAKE_MAX + 3):
        rb.enqueue(make_job(), now=NOW)
        assert client.llen(wake) == min(i + 1, WAKE_MAX)
    client.delete(wake)
    rb.enqueue_many([make_job() for _ in range(3)], now=NOW)
    assert client.llen(wake) == 3
    rb.enqueue_many([make_job() for _ in range(2 * WAKE_MAX)], now=NOW)
    assert client.llen(wake) == WAKE_MAX


# -- enqueue deadline fence -----------------------------------------------------------------


def test_an_enqueue_run_after_its_deadline_stores_nothing(rb: RedisBackend) -> None:
    rb.enqueue(make_job(), now=NOW)  # measures the server clock offset
    job = make_job()
    rb._offset = -10.0  # pretend the server clock is 10 s behind: the deadline has passed
    rb._offset_at = time.monotonic()
    with pytest.raises(EnqueueTimeout, match="nothing was stored"):
        rb.enqueue(job, now=NOW)
    assert rb.get(job.id) is None
    # the offset is measured again, and the retry goes through
    assert rb.enqueue(job, now=NOW).id == job.id
    assert rb.get(job.id) is not None


def test_script_arguments_are_written_as_redis_py_writes_them() -> None:
    bulk = backend_module._bulk
    assert bulk(["é", 7, -2, 2.5, b"\x00\xff", memoryview(b"m")]) == (
        b"$2\r\n\xc3\xa9\r\n$1\r\n7\r\n$2\r\n-2\r\n$3\r\n2.5\r\n$2\r\n\x00\xff\r\n$1\r\nm\r\n"
    )
    assert bulk([]) == b""


def test_the_deadline_is_compared_as_decimal_text(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert backend_module._micros(1.5) == "1500000" and backend_module._micros(-3.0) == "0"
    server = rb._current().main.time()
    now_us = server[0] * 1_000_000 + server[1]
    for deadline, stored in [
        ("0", False),
        (str(now_us - 1_000_000), False),  # one second ago, same length
        (str(now_us + 60_000_000), True),  # a minute ahead, same length
        ("9" * 17, True),  # longer: later
    ]:
        monkeypatch.setattr(backend_module, "_micros", lambda _seconds, d=deadline: d)
        job = make_job()
        if stored:
            assert rb.enqueue(job, now=NOW) == job
        else:
            with pytest.raises(EnqueueTimeout, match="nothing was stored"):
                rb.enqueue(job, now=NOW)
        assert (rb.get(job.id) is not None) is stored


# -- scripts' edge paths --------------------------------------------------------------------


def test_claim_when_the_clock_went_back(rb: RedisBackend) -> None:
    job = rb.enqueue(make_job(run_at=NOW), now=NOW)  # due at enqueue: in the ready set
    assert rb.claim(["default"], worker_id="w", now=NOW - 100, lease=30) == []
    assert rb.next_due(["default"], now=NOW - 100) == NOW
    [got] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert got.id == job.id


def test_promotion_in_batches_claims_everything(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "PROMOTE_BATCH", 3)
    jobs = [make_job(run_at=NOW + i) for i in range(10)]
    rb.enqueue_many(jobs, now=NOW - 100)
    claimed = rb.claim(["default"], worker_id="w", now=NOW + 100, lease=30, limit=100)
    claimed += rb.claim(["default"], worker_id="w", now=NOW + 100, lease=30, limit=100)
    claimed += rb.claim(["default"], worker_id="w", now=NOW + 100, lease=30, limit=100)
    claimed += rb.claim(["default"], worker_id="w", now=NOW + 100, lease=30, limit=100)
    assert [j.id for j in claimed] == [j.id for j in jobs]


def test_rescue_expired_and_purge_in_batches(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "RESCUE_BATCH", 2)
    monkeypatch.setattr(backend_module, "PURGE_BATCH", 2)
    rb.enqueue_many([make_job() for _ in range(5)], now=NOW)
    rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=5)
    rescued = rb.rescue_expired(now=NOW + 31, max_lost=1, error="{}")
    assert len(rescued) == 5 and {j.state for j in rescued} == {JobState.FAILED}
    assert rb.purge(states=["failed"]) == 5
    assert rb.counts() == {}


def test_list_jobs_scans_past_sparse_matches(rb: RedisBackend) -> None:
    rare = rb.enqueue(make_job(task="rare"), now=NOW)
    rb.enqueue_many([make_job(task="common") for _ in range(130)], now=NOW)
    assert [j.id for j in rb.list_jobs(task="rare", limit=5)] == [rare.id]
    assert len(rb.list_jobs(task="common", limit=120)) == 120
    assert rb.list_jobs(state="nonsense") == []


def test_enqueue_of_an_existing_id_changes_nothing(rb: RedisBackend) -> None:
    job = rb.enqueue(make_job(queue="a", key="k"), now=NOW)
    again = job.replace(queue="b", payload=b"new", key="other")
    assert rb.enqueue(again, now=NOW) == job
    assert rb.enqueue_many([again, again], now=NOW) == [job, job]
    assert rb.get(job.id) == job
    assert rb.counts() == {"a": {"pending": 1}}
    assert rb.enqueue(make_job(key="other"), now=NOW).key == "other"  # "other" stayed free


def test_large_batch_is_one_call(rb: RedisBackend) -> None:
    jobs = [make_job(key=f"k{i % 700}") for i in range(1000)]
    stored = rb.enqueue_many(jobs, now=NOW)
    assert len({j.id for j in stored}) == 700
    assert rb.counts() == {"default": {"pending": 700}}


def test_close_from_a_forked_child_leaves_the_parent_alone(rb: RedisBackend) -> None:
    rb.enqueue(make_job(), now=NOW)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            rb.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert rb.counts() == {"default": {"pending": 1}}


# -- unique keys, limits and ticks: the bookkeeping behind the contract -----------------------


def _hash(rb: RedisBackend, key: str) -> dict[str, str]:
    raw = rb._current().main.hgetall(key)
    return {k.decode(): v.decode() for k, v in raw.items()}


def _zset(rb: RedisBackend, key: str) -> dict[str, float]:
    return {m.decode(): s for m, s in rb._current().main.zrange(key, 0, -1, withscores=True)}


def test_unique_key_entries_follow_the_holder(rb: RedisBackend) -> None:
    root = rb.keys.root
    first = rb.enqueue(make_job(key="k"), now=NOW)
    assert _hash(rb, root + "uniq") == {"k": first.id}
    [claimed] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert claimed.lease is not None
    assert rb.complete(claimed.id, claimed.lease, now=NOW, result=None, expires_at=NOW + 10)
    assert _hash(rb, root + "uniq") == {}
    assert _hash(rb, root + "uniq_done") == {"k": first.id}
    # expired: a new job takes the key, the finished one stays until pruned
    second = rb.enqueue(make_job(key="k"), now=NOW + 10)
    assert second.id != first.id
    assert _hash(rb, root + "uniq") == {"k": second.id}
    assert rb.prune(now=NOW + 10) == 1
    assert _hash(rb, root + "uniq_done") == {}
    assert rb.cancel(second.id, now=NOW) == "cancelled"
    assert _hash(rb, root + "uniq") == {}


def test_a_requeued_job_fails_again_and_the_succeeded_holder_keeps_the_key(
    rb: RedisBackend,
) -> None:
    failed = rb.enqueue(make_job(key="k"), now=NOW)
    [c] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert c.lease and rb.fail(c.id, c.lease, now=NOW, error="{}", expires_at=None)
    done = rb.enqueue(make_job(key="k"), now=NOW)
    [c] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert c.lease and rb.complete(c.id, c.lease, now=NOW, result=None, expires_at=NOW + 100)
    # a succeeded holder does not stop a requeue (only a live one does) ...
    assert rb.requeue(failed.id, now=NOW + 1)
    assert rb.enqueue(make_job(key="k"), now=NOW + 1).id == failed.id
    [c] = rb.claim(["default"], worker_id="w", now=NOW + 1, lease=30)
    assert c.lease and rb.abort(c.id, c.lease, now=NOW + 2, error="{}", expires_at=None)
    # ... and once the requeued job is final again, the succeeded one still holds the key
    assert rb.enqueue(make_job(key="k"), now=NOW + 3).id == done.id
    assert rb.enqueue(make_job(key="k"), now=NOW + 100).id not in (done.id, failed.id)


def test_the_succeeded_job_that_expires_last_holds_the_key(rb: RedisBackend) -> None:
    def succeed(expires_at: float | None) -> Job:
        job = rb.enqueue(make_job(key="k"), now=NOW)
        [c] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert c.id == job.id and c.lease
        assert rb.complete(c.id, c.lease, now=NOW, result=None, expires_at=expires_at)
        return job

    # two succeeded jobs with one key: only possible through a requeue
    long = succeed(NOW + 100)
    other = rb.enqueue(make_job(key="x"), now=NOW)
    assert rb.cancel(other.id, now=NOW) == "cancelled"
    client = rb._current().main
    client.hset(rb.keys.job(other.id), "key", "k")  # a cancelled job with the same key
    assert rb.requeue(other.id, now=NOW)
    [c] = rb.claim(["default"], worker_id="w", now=NOW, lease=30)
    assert c.lease and rb.complete(c.id, c.lease, now=NOW, result=None, expires_at=NOW + 50)
    assert rb.enqueue(make_job(key="k"), now=NOW + 60).id == long.id


def test_running_counts_and_starts_follow_every_transition(rb: RedisBackend) -> None:
    root = rb.keys.root
    rate = {"a": backend_module.TaskLimit(rate=100, per=1000)}
    rb.enqueue_many([make_job(task="a", max_attempts=5) for _ in range(6)], now=NOW)
    jobs = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=6, limits=rate)
    assert _hash(rb, root + "busy") == {"a": "6"}
    assert set(_zset(rb, rb.keys.started("a"))) == {j.id for j in jobs}
    tokens = [j.lease or "" for j in jobs]
    assert rb.complete(jobs[0].id, tokens[0], now=NOW, result=None, expires_at=NOW)
    assert rb.fail(jobs[1].id, tokens[1], now=NOW, error="{}", expires_at=NOW)
    assert rb.abort(jobs[2].id, tokens[2], now=NOW, error="{}", expires_at=NOW)
    assert rb.retry(jobs[3].id, tokens[3], now=NOW, run_at=NOW + 1, error="{}")
    assert rb.release(jobs[4].id, tokens[4], now=NOW)
    assert rb.rescue(jobs[5].id, tokens[5], now=NOW, max_lost=5, error="{}") is not None
    assert _hash(rb, root + "busy") == {}
    # a job started again replaces its own start: it counts once
    again = rb.claim(["default"], worker_id="w", now=NOW + 2, lease=30, limit=6, limits=rate)
    assert len(again) == 3
    starts = _zset(rb, rb.keys.started("a"))
    assert len(starts) == 6 and sorted(starts.values()) == [NOW] * 3 + [NOW + 2] * 3
    assert rb.prune(now=NOW) == 3
    assert set(_zset(rb, rb.keys.started("a"))) == {j.id for j in again}
    for j in again:
        assert j.lease and rb.fail(j.id, j.lease, now=NOW, error="{}", expires_at=None)
    assert rb.purge(states=["failed"]) == 3
    assert _zset(rb, rb.keys.started("a")) == {}
    assert rb.counts() == {}


def test_only_claims_under_a_rate_of_the_task_record_its_starts(rb: RedisBackend) -> None:
    rb.enqueue_many([make_job(task=t) for t in "aabb"], now=NOW)
    client = rb._current().main
    limits = {"a": backend_module.TaskLimit(concurrency=5), "b": backend_module.TaskLimit(rate=5)}
    first = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=2)
    assert [j.task for j in first] == ["a", "a"]
    assert not client.exists(rb.keys.started("a"))  # no limits: nothing recorded
    second = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=2, limits=limits)
    assert set(_zset(rb, rb.keys.started("b"))) == {j.id for j in second}
    assert not client.exists(rb.keys.started("a"))  # a concurrency limit records no start


def test_a_rate_limited_claim_trims_starts_outside_the_window(rb: RedisBackend) -> None:
    rb.enqueue_many([make_job(task="r") for _ in range(4)], now=NOW)
    limits = {"r": backend_module.TaskLimit(rate=2, per=10)}
    first = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=4, limits=limits)
    assert len(first) == 2
    assert rb.claim(["default"], worker_id="w", now=NOW + 10, lease=30, limit=4, limits=limits)
    assert len(_zset(rb, rb.keys.started("r"))) == 2  # the two of NOW were trimmed


def test_claim_skips_blocked_jobs_page_by_page_up_to_its_bound(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "SKIP_PAGE", 2)
    monkeypatch.setattr(backend_module, "SKIP_MAX", 5)
    limits = {"slow": backend_module.TaskLimit(concurrency=1)}
    rb.enqueue_many([make_job(task="slow", priority=9) for _ in range(6)], now=NOW)
    fast = [make_job(task="fast", run_at=NOW - 10 + i) for i in range(3)]
    rb.enqueue_many(fast, now=NOW)
    [slow] = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limits=limits)
    assert slow.task == "slow"
    # five slow jobs wait in front of the fast ones: within the bound, every fast one is found
    got = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=5, limits=limits)
    assert [j.id for j in got] == [j.id for j in fast]
    rb.enqueue_many([make_job(task="slow", priority=9), make_job(task="fast")], now=NOW)
    # now six wait in front: past the bound, the fast job waits for a later claim
    assert rb.claim(["default"], worker_id="w", now=NOW, lease=30, limits=limits) == []
    assert [j.task for j in rb.claim(["default"], worker_id="w", now=NOW, lease=30)] == ["slow"]
    [late] = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limits=limits)
    assert late.task == "fast"


def test_limits_apply_across_queues_and_never_overshoot_in_one_claim(rb: RedisBackend) -> None:
    rb.enqueue_many([make_job(task="c", queue=q) for q in ("a", "b", "a", "b")], now=NOW)
    limits = {"c": backend_module.TaskLimit(concurrency=3, rate=5, per=60)}
    got = rb.claim(["a", "b"], worker_id="w", now=NOW, lease=30, limit=10, limits=limits)
    assert [j.queue for j in got] == ["a", "a", "b"]
    assert rb.claim(["b"], worker_id="w", now=NOW, lease=30, limit=10, limits=limits) == []


@pytest.mark.parametrize(
    ("rule", "claimed"),
    [
        (backend_module.TaskLimit(), 3),
        (backend_module.TaskLimit(concurrency=0), 0),
        (backend_module.TaskLimit(rate=1, per=math.inf), 1),
        (backend_module.TaskLimit(rate=5, per=0), 3),
    ],
)
def test_odd_limits(rb: RedisBackend, rule: Any, claimed: int) -> None:
    rb.enqueue_many([make_job(task="t") for _ in range(3)], now=NOW)
    got = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=3, limits={"t": rule})
    assert len(got) == claimed


def test_limits_json() -> None:
    to_json = backend_module._limits_json
    assert to_json(None) == "" and to_json({}) == ""
    assert to_json({"t": backend_module.TaskLimit()}) == ""
    assert to_json({"t": backend_module.TaskLimit(concurrency=2, rate=3, per=0.5)}) == (
        '{"t": {"c": 2, "r": 3, "p": 0.5}}'
    )
    with pytest.raises(ConfigurationError):
        to_json({"t": backend_module.TaskLimit(rate=1, per=math.nan)})


def test_schedule_ticks_are_stored_exactly(rb: RedisBackend) -> None:
    tick = NOW + 0.1 + 0.2
    job = make_job()
    assert rb.schedule_tick("a:b {c}", tick, job, now=tick) == job
    assert rb.schedule_ticks() == {"a:b {c}": tick}
    # an id already stored: the tick is recorded, the stored job returned
    assert rb.schedule_tick("a:b {c}", tick + 60, job.replace(queue="x"), now=tick) == job
    assert rb.schedule_ticks() == {"a:b {c}": tick + 60}


# -- headers, keys of all states, per-minute stats and delete --------------------------------


def _fields(rb: RedisBackend, job_id: str) -> set[str]:
    return {k.decode() for k in rb._current().main.hkeys(rb.keys.job(job_id))}


def test_headers_are_kept_exactly_by_every_script(rb: RedisBackend) -> None:
    headers = '{"traceparent": "00-ab-cd-01", "tenant": "\u00e9t\u00e9 {x}", "n": ""}'
    jobs = [make_job(max_attempts=2, headers=headers, result_ttl=5.0) for _ in range(7)]
    jobs.append(make_job(queue="plain"))  # no headers: no field, read back as None
    stored = rb.enqueue_many(jobs, now=NOW)
    assert [j.headers for j in stored] == [headers] * 7 + [None]
    assert "headers" not in _fields(rb, jobs[-1].id)
    claimed = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=7)
    assert [j.headers for j in claimed] == [headers] * 7
    a, b, c, d, e, f, g = ((j.id, j.lease or "") for j in claimed)
    assert rb.complete(*a, now=NOW, result=b"r", expires_at=None)
    assert rb.fail(*b, now=NOW, error="{}", expires_at=None)
    assert rb.abort(*c, now=NOW, error="{}", expires_at=None)
    assert rb.retry(*d, now=NOW, run_at=NOW, error="{}")
    assert rb.release(*e, now=NOW)
    rescued = rb.rescue(*f, now=NOW, max_lost=5, error="{}")
    assert rescued is not None and rescued.headers == headers
    [expired] = rb.rescue_expired(now=NOW + 31, max_lost=1, error="{}")
    assert expired.id == g[0] and expired.headers == headers
    assert rb.requeue(b[0], now=NOW + 1)
    assert rb.cancel(jobs[-1].id, now=NOW) == "cancelled"
    assert rb.schedule_tick("s", NOW, make_job(headers=headers), now=NOW) is not None
    listed = rb.list_jobs(limit=100)
    assert len(listed) == 9
    for job in listed:
        assert job.headers == (None if job.id == jobs[-1].id else headers)
        assert rb.get(job.id) == job
    assert "headers" not in _fields(rb, jobs[-1].id)


def test_list_jobs_by_key_finds_every_state_newest_first(rb: RedisBackend) -> None:
    key = "order:7 {x}*"
    first = rb.enqueue(make_job(key=key, task="a"), now=NOW)
    assert rb.enqueue(make_job(key=key), now=NOW).id == first.id  # held: not stored, not indexed
    assert rb.cancel(first.id, now=NOW) == "cancelled"
    second = rb.enqueue(make_job(key=key, task="b", queue="other"), now=NOW)
    [c] = rb.claim(["other"], worker_id="w", now=NOW, lease=30)
    assert c.lease and rb.complete(c.id, c.lease, now=NOW, result=None, expires_at=NOW + 5)
    third = rb.enqueue(make_job(key=key, task="a"), now=NOW + 5)
    rb.enqueue_many([make_job(key="order:70"), make_job(key="order:7"), make_job()], now=NOW)
    ids = [third.id, second.id, first.id]
    assert [j.id for j in rb.list_jobs(key=key)] == ids
    assert set(_zset(rb, rb.keys.bykey(key))) == set(ids)
    # keyset pagination, and the other filters on top
    page = rb.list_jobs(key=key, limit=2)
    assert [j.id for j in page] == ids[:2]
    assert [j.id for j in rb.list_jobs(key=key, limit=2, cursor=page[-1].id)] == ids[2:]
    assert [j.id for j in rb.list_jobs(key=key, state="succeeded")] == [second.id]
    assert [j.id for j in rb.list_jobs(key=key, task="a")] == [third.id, first.id]
    assert [j.id for j in rb.list_jobs(key=key, queue="default", state="pending")] == [third.id]
    assert rb.list_jobs(key="order:") == [] and rb.list_jobs(key="") == []
    # deleting a job (prune, purge, delete) removes it from the key's index
    assert rb.prune(now=NOW + 5) == 1
    assert rb.purge(states=["cancelled"]) == 1
    assert _zset(rb, rb.keys.bykey(key)) == {third.id: 0.0}
    assert rb.cancel(third.id, now=NOW) == "cancelled" and rb.delete([third.id]) == 1
    assert rb.list_jobs(key=key) == []
    assert not rb._current().main.exists(rb.keys.bykey(key))


def test_stats_are_counted_inside_the_scripts_and_trimmed_by_prune(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = 28_333_334  # the first minute boundary after NOW, in minutes
    rb.enqueue_many([make_job(max_attempts=1) for _ in range(6)], now=NOW)
    jobs = rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=6)
    held = [(j.id, j.lease or "") for j in jobs]
    assert rb.retry(*held[0], now=m * 60 - 1e-6, run_at=NOW, error="{}", count=False)
    assert rb.complete(*held[1], now=m * 60.0, result=None, expires_at=None)
    assert not rb.complete(*held[1], now=m * 60.0, result=None, expires_at=None)  # fenced
    assert rb.release(*held[2], now=m * 60.0)  # counted nowhere
    assert rb.rescue(*held[3], now=m * 60.0 + 59.5, max_lost=5, error="{}") is not None
    assert rb.complete(*held[4], now=math.inf, result=None, expires_at=None)  # not counted
    [lost] = rb.rescue_expired(now=(m + 3) * 60.0, max_lost=5, error="{}")
    assert lost.id == held[5][0] and lost.state is JobState.FAILED
    expected = [((m - 1) * 60.0, 0, 0, 1), (m * 60.0, 1, 1, 0), ((m + 3) * 60.0, 0, 1, 0)]
    assert rb.stats(since=-math.inf) == expected
    assert rb.stats(since=m * 60.0 + 59.5) == expected[1:]  # the minute of since counts whole
    assert rb.stats(since=math.inf) == [] and rb.stats(since=math.nan) == []
    assert _hash(rb, rb.keys.stats) == {
        f"{m - 1}:r": "1",
        f"{m}:s": "1",
        f"{m}:f": "1",
        f"{m + 3}:f": "1",
    }
    assert _zset(rb, rb.keys.stat_minutes) == {str(k): float(k) for k in (m - 1, m, m + 3)}
    # prune keeps STATS_RETENTION before its now, and trims in batches
    monkeypatch.setattr(backend_module, "STATS_TRIM_BATCH", 1)
    retention = backend_module.STATS_RETENTION
    assert retention >= 86400
    rb.prune(now=(m + 3) * 60.0 + retention)  # minute m + 3 is the first one kept
    assert rb.stats(since=0) == expected[1:]  # one minute per prune
    rb.prune(now=(m + 3) * 60.0 + retention)
    rb.prune(now=(m + 3) * 60.0 + retention)
    assert rb.stats(since=0) == expected[2:]
    assert _hash(rb, rb.keys.stats) == {f"{m + 3}:f": "1"}
    assert set(_zset(rb, rb.keys.stat_minutes)) == {str(m + 3)}


def test_delete_leaves_no_trace_of_final_jobs_and_spares_live_ones(
    rb: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "DELETE_BATCH", 2)
    jobs = sorted((make_job(task="t", max_attempts=1) for _ in range(5)), key=lambda j: j.id)
    jobs = [j.replace(key=f"k{i}") for i, j in enumerate(jobs)]  # claimed in id order
    rb.enqueue_many(jobs, now=NOW)
    claimed = {j.id: j for j in rb.claim(["default"], worker_id="w", now=NOW, lease=30, limit=4)}
    ids = [j.id for j in jobs]
    held = [(i, claimed[i].lease or "") for i in ids[:4]]
    assert rb.complete(*held[0], now=NOW, result=b"r", expires_at=NOW + 100)
    assert rb.complete(*held[1], now=NOW, result=None, expires_at=None)
    assert rb.fail(*held[2], now=NOW, error="{}", expires_at=NOW + 100)
    running = ids[3]
    assert rb.cancel(ids[4], now=NOW) == "cancelled"
    again = rb.enqueue(make_job(key="k4"), now=NOW)  # the cancelled job gave its key up
    doomed = [ids[0], ids[1], "nope", ids[2], ids[0], running, again.id, ids[4], ids[4]]
    assert rb.delete(doomed) == 4
    assert rb.delete(doomed) == 0
    assert [j.id for j in rb.list_jobs()] == [again.id, running]
    assert rb.counts() == {"default": {"pending": 1, "running": 1}}
    client = rb._current().main
    root = rb.keys.root
    assert _hash(rb, root + "uniq_done") == {}
    assert client.zcard(root + "expiring") == 0
    for state in ("succeeded", "failed", "cancelled"):
        assert not client.exists(rb.keys.jobs(state, "default"))
    assert not client.exists(rb.keys.started("t"))  # claimed without a rate limit
    for k in ("k0", "k1", "k2"):
        assert not client.exists(rb.keys.bykey(k))
    assert set(_zset(rb, rb.keys.bykey("k3"))) == {running}
    assert set(_zset(rb, rb.keys.bykey("k4"))) == {again.id}
    assert all(rb.get(i) is None for i in ids if i != running)
    # the keys of deleted succeeded jobs are free again
    assert rb.enqueue(make_job(key="k0"), now=NOW).id != ids[0]
    assert rb.enqueue(make_job(key="k1"), now=NOW).id != ids[1]
    assert rb.delete([]) == 0


# -- the reference backend and the Redis backend agree on random histories --------------------

# A rate counts the starts of the claims that gave the task that rate (workers pass the
# limits of every task they know); the memory backend counts every start, which agrees
# when every claim passes the same rates, as workers of one app do. Concurrency limits
# vary from claim to claim.
_RATES = {"b": backend_module.TaskLimit(rate=3, per=8.5), "c": backend_module.TaskLimit(rate=1)}
_LIMIT_CHOICES: list[dict[str, Any] | None] = [
    _RATES,
    {"a": backend_module.TaskLimit(concurrency=1), **_RATES},
    {"a": backend_module.TaskLimit(concurrency=2), **_RATES},
    {**_RATES, "b": backend_module.TaskLimit(concurrency=1, rate=3, per=8.5)},
]


def _shown(job: Job) -> Job:
    return job.replace(lease=None if job.lease is None else "held")


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_match_the_memory_backend(rb: RedisBackend, seed: int) -> None:
    import random

    from spoolhouse.backends.memory import MemoryBackend

    rnd = random.Random(seed)
    mem = MemoryBackend()
    now = NOW
    tokens: dict[str, tuple[str, str]] = {}  # id -> (memory token, redis token)
    ids: list[str] = []

    def new_job() -> Job:
        job = Job(
            id=new_job_id(now + len(ids) / 1000),
            task=rnd.choice("abc"),
            queue=rnd.choice(["q1", "q2"]),
            payload=b"p",
            priority=rnd.randint(0, 2),
            run_at=now + rnd.choice([-2, 0, 0, 1, 3]),
            max_attempts=rnd.randint(1, 3),
            key=rnd.choice([None, None, "k1", "k2", "k3"]),
            created_at=now,
            result_ttl=rnd.choice([None, 5.0, 20.0]),
            headers=rnd.choice([None, '{"t": "x"}', ""]),
        )
        ids.append(job.id)
        return job

    def same_enqueue(given: Job, a: Job, b: Job) -> None:
        if a.id == given.id or b.id == given.id:
            assert a.id == b.id
        else:  # a holder of the key: with two holders, either may be returned
            assert a.key == b.key == given.key

    def held() -> list[tuple[str, str, str]]:
        return [(i, *tokens[i]) for i in ids if i in tokens]

    for step in range(250):
        now += rnd.choice([0, 0.5, 1, 2, 7, 30])
        op = rnd.random()
        where = f"seed {seed} step {step}"
        if op < 0.2:
            job = new_job()
            same_enqueue(job, mem.enqueue(job, now=now), rb.enqueue(job, now=now))
        elif op < 0.27:
            batch = [new_job() for _ in range(rnd.randint(1, 3))]
            if ids and rnd.random() < 0.3:
                stored = mem.get(rnd.choice(ids))
                if stored is not None:
                    batch.append(stored.replace(queue="q2", priority=7))
            for given, a, b in zip(
                batch,
                mem.enqueue_many(batch, now=now),
                rb.enqueue_many(batch, now=now),
                strict=True,
            ):
                same_enqueue(given, a, b)
        elif op < 0.5:
            queues = rnd.sample(["q1", "q2"], rnd.randint(1, 2))
            limits = rnd.choice(_LIMIT_CHOICES)
            limit = rnd.randint(1, 3)
            a_jobs = mem.claim(queues, worker_id="w", now=now, lease=10, limit=limit, limits=limits)
            b_jobs = rb.claim(queues, worker_id="w", now=now, lease=10, limit=limit, limits=limits)
            assert [j.id for j in a_jobs] == [j.id for j in b_jobs], where
            for ja, jb in zip(a_jobs, b_jobs, strict=True):
                assert ja.lease and jb.lease
                tokens[ja.id] = (ja.lease, jb.lease)
        elif op < 0.72 and held():
            jid, ta, tb = rnd.choice(held())
            if rnd.random() < 0.1:
                ta = tb = "stale"
            kind = rnd.choice(
                ["complete", "complete_many", "fail", "abort", "retry", "release", "rescue"]
            )
            expires = rnd.choice([None, now + 4])
            if kind == "complete":
                ra: object = mem.complete(jid, ta, now=now, result=b"r", expires_at=expires)
                rr: object = rb.complete(jid, tb, now=now, result=b"r", expires_at=expires)
            elif kind == "complete_many":  # some held jobs (maybe twice), some stale tokens
                others = rnd.choices(ids, k=rnd.randint(0, 4))
                picks = [(i, *tokens.get(i, ("x", "x"))) for i in others]
                picks += [(jid, ta, tb)]
                res = rnd.choice([None, b"", b"r"])
                ra = mem.complete_many([(i, a, res, expires) for i, a, _ in picks], now=now)
                rr = rb.complete_many([(i, b, res, expires) for i, _, b in picks], now=now)
            elif kind in ("fail", "abort"):
                ra = getattr(mem, kind)(jid, ta, now=now, error="{}", expires_at=expires)
                rr = getattr(rb, kind)(jid, tb, now=now, error="{}", expires_at=expires)
            elif kind == "retry":
                at, count = now + rnd.choice([0, 2]), rnd.random() < 0.7
                ra = mem.retry(jid, ta, now=now, run_at=at, error="{}", count=count)
                rr = rb.retry(jid, tb, now=now, run_at=at, error="{}", count=count)
            elif kind == "release":
                ra = mem.release(jid, ta, now=now)
                rr = rb.release(jid, tb, now=now)
            else:
                got_a = mem.rescue(jid, ta, now=now, max_lost=2, error="{}", expires_at=expires)
                got_b = rb.rescue(jid, tb, now=now, max_lost=2, error="{}", expires_at=expires)
                ra = None if got_a is None else _shown(got_a)
                rr = None if got_b is None else _shown(got_b)
            assert ra == rr, (where, kind)
        elif op < 0.77:
            expires = rnd.choice([None, now + 4])
            a_list = mem.rescue_expired(now=now, max_lost=2, error="{}", expires_at=expires)
            b_list = rb.rescue_expired(now=now, max_lost=2, error="{}", expires_at=expires)
            assert sorted(map(_shown, a_list), key=lambda j: j.id) == sorted(
                map(_shown, b_list), key=lambda j: j.id
            ), where
        elif op < 0.8 and held():
            leases = {i: t for i, t, _ in held()}
            leases_b = {i: t for i, _, t in held()}
            assert mem.extend_leases(leases, now=now, lease=10) == rb.extend_leases(
                leases_b, now=now, lease=10
            ), where
        elif op < 0.85 and ids:
            jid = rnd.choice(ids)
            assert mem.cancel(jid, now=now) == rb.cancel(jid, now=now), where
        elif op < 0.9 and ids:
            jid = rnd.choice(ids)
            assert mem.requeue(jid, now=now) == rb.requeue(jid, now=now), where
        elif op < 0.92:
            assert mem.prune(now=now) == rb.prune(now=now), where
        elif op < 0.94 and ids:
            doomed = rnd.choices([*ids, "missing"], k=rnd.randint(1, 6))
            assert mem.delete(doomed) == rb.delete(doomed), where
        elif op < 0.96:
            states = rnd.sample(["succeeded", "failed", "cancelled"], rnd.randint(1, 2))
            assert mem.purge(states=states, before=now - 3) == rb.purge(
                states=states, before=now - 3
            ), where
        else:
            name = rnd.choice(["s1", "s2"])
            tick = math.floor(now / 4) * 4 - rnd.choice([0, 0, 4])
            for _ in range(rnd.randint(1, 2)):  # the same tick again: nothing happens
                job = new_job()
                a = mem.schedule_tick(name, tick, job, now=now)
                b = rb.schedule_tick(name, tick, job, now=now)
                assert (a is None) == (b is None), where
                if a is not None and b is not None:
                    same_enqueue(job, a, b)
            assert mem.schedule_ticks() == rb.schedule_ticks(), where
        assert [_shown(j) for j in mem.list_jobs(limit=10_000)] == [
            _shown(j) for j in rb.list_jobs(limit=10_000)
        ], where
        assert mem.counts() == rb.counts(), where
        assert mem.stats(since=NOW) == rb.stats(since=NOW), where
        for key in ("k1", "k2", "k3"):
            assert [_shown(j) for j in mem.list_jobs(key=key, limit=10_000)] == [
                _shown(j) for j in rb.list_jobs(key=key, limit=10_000)
            ], where
        if ids and step % 10 == 0:  # pages by key and state, as a dashboard reads them
            key, state = rnd.choice(["k1", "k2", "k3"]), rnd.choice([None, "pending", "succeeded"])
            cursor: str | None = None
            while True:
                page_a = mem.list_jobs(key=key, state=state, limit=2, cursor=cursor)
                page_b = rb.list_jobs(key=key, state=state, limit=2, cursor=cursor)
                assert [j.id for j in page_a] == [j.id for j in page_b], where
                if not page_a:
                    break
                cursor = page_a[-1].id
    # the history went through several minutes of outcomes and deleted jobs
    assert len(mem.stats(since=NOW)) > 3 and len(mem.list_jobs(limit=10_000)) < len(ids)
