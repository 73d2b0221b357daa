"""Helpers of the dashboard tests: tasks with hostile names and secrets, CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient

from spoolhouse import FakeClock, Spooler

CANARY = "CANARY-7f3a"
HOSTILE = "<script>alert(1)</script>"
PREFIX = "/spool"


@dataclass
class Tasks:
    """The tasks registered on the test spooler."""

    spooler: Spooler
    clock: FakeClock
    login: Any  # login(user, password): fails, quoting its arguments in the message
    add: Any  # add(a, b) -> a + b
    hostile: Any  # a task named and queued <script>…</script>
    secret_result: Any  # returns {"token": …}
    slow: Any  # never run by the tests: claimed by hand to look running


def make_tasks(spooler: Spooler, clock: FakeClock) -> Tasks:
    @spooler.task(name="demo.login", retries=0)
    def login(user: str, password: str, note: str = "") -> None:
        raise PermissionError(f"login failed for {user} with password={password} ({note})")

    @spooler.task(name="demo.add", retries=0)
    def add(a: int, b: int) -> int:
        return a + b

    @spooler.task(name=HOSTILE, queue=HOSTILE, retries=0)
    def hostile(text: str) -> str:
        raise ValueError(text)

    @spooler.task(name="demo.secret_result", retries=0)
    def secret_result(user: str) -> dict[str, str]:
        return {"user": user, "token": "tok-" + CANARY}

    @spooler.task(name="demo.slow", queue="slow", retries=2)
    def slow(n: int) -> None:  # pragma: no cover - only claimed, never executed
        pass

    return Tasks(spooler=spooler, clock=clock, login=login, add=add, hostile=hostile,
                 secret_result=secret_result, slow=slow)


def full(_request: Any) -> str:
    return "full"


def read_only(_request: Any) -> str:
    return "read-only"


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, page: str = PREFIX + "/jobs?state=failed") -> str:
    """Load a page with forms (which sets the CSRF cookie) and return its token."""
    html = client.get(page).get_data(as_text=True)
    match = _TOKEN.search(html)
    assert match, f"no form on {page}"
    return match.group(1)


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))
