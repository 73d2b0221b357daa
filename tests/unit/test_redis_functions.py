"""On Redis 7 the scripts run as functions (FCALL), loaded on first use, with EVAL and
EVALSHA as the fallbacks."""

from __future__ import annotations

import time
from typing import Any

import redis
from test_redis_backend import NOW, make_job, private_redis  # noqa: F401 (the fixture)

from spoolhouse.backends.redis import RedisBackend
from spoolhouse.backends.redis.scripts import library


def _calls(server: Any) -> dict[str, int]:
    return {
        name.removeprefix("cmdstat_"): int(stats["calls"])
        for name, stats in server.client().info("commandstats").items()
    }


def test_the_scripts_run_as_functions_loaded_on_first_use(private_redis: Any) -> None:  # noqa: F811
    server = private_redis()
    b = RedisBackend(server.url, prefix="f")
    try:
        job = b.enqueue(make_job(), now=NOW)
        [claimed] = b.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert claimed.id == job.id and claimed.lease
        assert b.complete(job.id, claimed.lease, now=NOW, result=b"r", expires_at=None)
        assert b.counts() == {"default": {"succeeded": 1}}
        calls = _calls(server)
        assert calls.get("fcall", 0) >= 3 and calls.get("fcall_ro", 0) >= 1
        assert "evalsha" not in calls and "eval" not in calls
        name, _ = library()
        libraries = server.client().function_list()
        assert [dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"] for lib in libraries] == [
            name.encode()
        ]
        # a flushed server: the next call loads the library again, nothing is lost
        server.client().function_flush()
        again = b.enqueue(make_job(), now=NOW)
        assert b.get(again.id) == again
        assert len(server.client().function_list()) == 1
    finally:
        b.close()


def test_read_only_calls_answer_on_a_paused_server_without_the_library(
    private_redis: Any,  # noqa: F811
) -> None:
    server = private_redis()
    b = RedisBackend(server.url, prefix="p", socket_timeout=2)
    admin = server.client()
    try:
        b.enqueue(make_job(run_at=NOW + 5), now=NOW)
        b.get("x")  # the first use of the main pool
        admin.function_flush()
        admin.script_flush()
        admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
        started = time.monotonic()
        assert b.counts() == {"default": {"pending": 1}}
        assert b.next_due(["default"], now=NOW) == NOW + 5
        assert b.stats(since=0) == []
        assert time.monotonic() - started < 1
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        b.close()


def test_without_permission_to_load_functions_the_scripts_run_with_evalsha(
    private_redis: Any,  # noqa: F811
) -> None:
    server = private_redis()
    admin = server.client()
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-function"
    )
    url = f"redis://app:pw@127.0.0.1:{server.port}/0"
    b = RedisBackend(url, prefix="acl")
    try:
        job = b.enqueue(make_job(), now=NOW)
        assert b.counts() == {"default": {"pending": 1}}
        [claimed] = b.claim(["default"], worker_id="w", now=NOW, lease=30)
        assert claimed.id == job.id
        assert admin.function_list() == []
        assert _calls(server).get("evalsha", 0) >= 1
    finally:
        b.close()
    try:
        redis.Redis.from_url(url).execute_command("FUNCTION", "LOAD", library()[1])
        raise AssertionError("the user may load functions")
    except redis.exceptions.NoPermissionError:
        pass
