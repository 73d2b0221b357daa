"""RQ, with its defaults (results kept 500 s) plus ``retry=Retry(max=3)`` on every job:
RQ's only way to re-run a job whose worker died (its cleanup requeues an abandoned job
that has retries left, and fails it otherwise). Workers: ``rq worker --burst`` (forks a
work horse per job) or ``rq worker --burst -w rq.worker.SimpleWorker`` (in-process).
"""

from __future__ import annotations

import os

import probe


def noop(i: int) -> None:
    probe.hit(i)


_queue = None


def queue():  # type: ignore[no-untyped-def]
    global _queue
    if _queue is None:
        from redis import Redis
        from rq import Queue

        _queue = Queue("bench", connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))
    return _queue


def enqueue(i: int) -> None:
    from rq import Retry

    queue().enqueue(noop, i, retry=Retry(max=3))


def fill(n: int) -> None:
    from rq import Queue, Retry

    q = queue()
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(noop, (i,), retry=Retry(max=3))
                        for i in range(start, min(n, start + 1000))])


def close() -> None:
    pass
