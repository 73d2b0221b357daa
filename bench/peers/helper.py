"""Client side of one workload, run in the system's own interpreter; prints one JSON line.

    python helper.py APP_MODULE enqueue N        # N one-call enqueues, timed: {"rate": jobs/s}
    python helper.py APP_MODULE fill N           # N jobs for a drain (not timed)
    python helper.py APP_MODULE latency S W      # W warm-up + S samples: {"ms": [...]}

Latency: a Unix datagram socket is bound at ``BENCH_NOTIFY``; for each sample the
enqueue time is ``time.time()`` taken just before the enqueue call (for uWSGI, inside
uWSGI just before ``uwsgi.spool``), the start time is the one the task sends from
``probe.hit`` (same machine clock), and the next sample waits until the job has started
plus a pause drawn uniformly from 5-105 ms, so every sample finds an idle worker
and the enqueues fall at random phases of the systems that poll.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import socket
import sys
import time

import probe

#: A job whose start is not reported within this many seconds is counted as lost.
SAMPLE_TIMEOUT = 60.0


def enqueue(app, n: int) -> dict:  # type: ignore[no-untyped-def]
    if hasattr(app, "timed_enqueue"):
        return {"rate": app.timed_enqueue(n)}
    app.enqueue(-1)  # connect, create the schema: outside the timing
    t0 = time.perf_counter()
    for i in range(n):
        app.enqueue(i)
    return {"rate": n / (time.perf_counter() - t0)}


def latency(app, samples: int, warmup: int) -> dict:  # type: ignore[no-untyped-def]
    path = os.environ["BENCH_NOTIFY"]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    stamped = getattr(app, "enqueue_stamped", None)
    values: list[float] = []
    lost = 0
    try:
        for k in range(warmup + samples):
            index = 1_000_000 + k
            sock.setblocking(False)
            try:
                while True:
                    sock.recv(64)  # stale datagrams
            except BlockingIOError:
                pass
            sock.setblocking(True)
            t0 = time.time()
            if stamped is not None:
                t0 = stamped(index)
            else:
                app.enqueue(index)
            deadline = time.monotonic() + (120.0 if k < warmup else SAMPLE_TIMEOUT)
            started = None
            while started is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(left)
                try:
                    i, start, _ = probe.RECORD.unpack(sock.recv(64))
                except TimeoutError:
                    break
                if i == index:
                    started = start
            if started is None:
                lost += 1
                continue
            if k >= warmup:
                values.append((started - t0) * 1000)
            time.sleep(random.uniform(0.005, 0.105))
    finally:
        sock.close()
        os.unlink(path)
    return {"ms": values, "lost": lost}


def main() -> None:
    module, action, *args = sys.argv[1:]
    app = importlib.import_module(module)
    try:
        if action == "enqueue":
            result = enqueue(app, int(args[0]))
        elif action == "fill":
            t0 = time.perf_counter()
            app.fill(int(args[0]))
            result = {"seconds": time.perf_counter() - t0}
        elif action == "latency":
            result = latency(app, int(args[0]), int(args[1]))
        else:
            raise SystemExit(f"unknown action {action!r}")
    finally:
        app.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
