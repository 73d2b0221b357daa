"""A private redis-server for tests that stop, pause or restart Redis.

Started on a free port of 127.0.0.1 with a directory of the test's own, killed
by PID; the shared server of the machine is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_redis_server() -> str:
    """The redis-server binary; skip (locally) or fail (in CI) without it."""
    binary = shutil.which("redis-server")
    if binary is not None:
        return binary
    message = "redis-server is not installed (apt-get install redis-server)"
    if IN_CI:
        pytest.fail(message + "; in CI a missing service is a failure")
    pytest.skip(message)


class PrivateRedis:
    """A redis-server of our own on a free port; restartable on the same port and dir."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.binary = require_redis_server()
        self.port = free_port()
        self.dir = directory
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.options,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().ping()  # also fails while the AOF is loading
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
            try:
                code = self.proc.wait(timeout=0.02)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"redis-server exited with {code}: {self.log()}")

    def log(self) -> str:
        return (self.dir / "redis.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL and reap (no-op when not running)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
            self.proc.kill()
            self.proc.wait(timeout=10)

    def shutdown(self) -> None:
        """A graceful SHUTDOWN (the AOF is flushed), then reap."""
        assert self.proc is not None
        with contextlib.suppress(redis.exceptions.ConnectionError):
            self.client().shutdown()  # the server closes the connection as it exits
        self.proc.wait(timeout=30)
