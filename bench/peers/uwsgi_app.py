"""uWSGI's spooler, driven from inside uWSGI (``uwsgi.spool`` only works there).

The spooler function is the raw ``uwsgi.spooler`` hook (no ``uwsgidecorators``): it
returns ``SPOOL_OK`` and uWSGI then deletes the spool file, so a spooler process that
dies mid-task leaves the file to be run again (at-least-once). ``uwsgi.spool`` writes
one file per job (``open(O_CREAT|O_EXCL)``, ``write``, ``close``: no fsync).

The WSGI app is the client side, reached over HTTP on 127.0.0.1:
``/enqueue?n=N`` spools N jobs one call each and answers the elapsed seconds (measured
in uWSGI); ``/one?i=I`` takes ``time.time()`` just before ``uwsgi.spool`` and answers it.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import probe
import uwsgi  # type: ignore[import-not-found]


def spool_task(env: dict[bytes, bytes]) -> int:
    probe.hit(int(env[b"i"]))
    return uwsgi.SPOOL_OK


uwsgi.spooler = spool_task


def application(environ, start_response):  # type: ignore[no-untyped-def]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ.get("PATH_INFO", "")
    if path == "/enqueue":
        n = int(query["n"][0])
        first = int(query.get("first", ["0"])[0])
        t0 = time.perf_counter()
        for i in range(first, first + n):
            uwsgi.spool({b"i": str(i).encode()})
        body = {"elapsed": time.perf_counter() - t0, "n": n}
    elif path == "/one":
        i = str(int(query["i"][0])).encode()
        t0 = time.time()
        uwsgi.spool({b"i": i})
        body = {"t0": t0}
    else:
        body = {"ok": True}
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
