"""Client side of ``uwsgi_app``: HTTP requests on 127.0.0.1 to the uWSGI instance
(``BENCH_UWSGI`` = ``host:port``) whose WSGI app calls ``uwsgi.spool``."""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any

_conn: http.client.HTTPConnection | None = None


def _get(path: str) -> Any:
    global _conn
    host, port = os.environ["BENCH_UWSGI"].rsplit(":", 1)
    deadline = time.monotonic() + 60
    while True:
        try:
            if _conn is None:
                _conn = http.client.HTTPConnection(host, int(port), timeout=600)
            _conn.request("GET", path)
            response = _conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"uWSGI answered {response.status}: {data[:200]!r}")
            if response.getheader("Connection", "").lower() == "close" or response.will_close:
                _conn.close()
                _conn = None
            return json.loads(data)
        except (ConnectionError, http.client.HTTPException, OSError):
            if _conn is not None:
                _conn.close()
                _conn = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # not listening yet


def timed_enqueue(n: int) -> float:
    """Jobs/s of ``n`` ``uwsgi.spool`` calls, timed inside uWSGI."""
    _get("/enqueue?n=1&first=-1")  # warm up
    return n / float(_get(f"/enqueue?n={n}")["elapsed"])


def enqueue_stamped(i: int) -> float:
    """Spool job ``i``; return ``time.time()`` taken in uWSGI just before ``uwsgi.spool``."""
    return float(_get(f"/one?i={i}")["t0"])


def enqueue(i: int) -> None:
    enqueue_stamped(i)


def fill(n: int) -> None:
    for start in range(0, n, 5000):
        _get(f"/enqueue?n={min(5000, n - start)}&first={start}")


def close() -> None:
    if _conn is not None:
        _conn.close()
