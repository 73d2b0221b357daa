"""Celery with a Redis broker, configured for at-least-once: ``task_acks_late`` (ack after
the task returns) and ``task_reject_on_worker_lost`` (a message whose worker process died
goes back to the queue instead of being acked). No result backend (``task_ignore_result``).

Worker: ``celery -A celery_app worker -c 2 --pool prefork``.
"""

from __future__ import annotations

import os

import probe
from celery import Celery

app = Celery("celery_app", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(i: int) -> None:
    probe.hit(i)


def enqueue(i: int) -> None:
    noop.delay(i)


def fill(n: int) -> None:
    # Not measured: one producer for all the messages, to save time.
    with app.producer_or_acquire() as producer:
        for i in range(n):
            noop.apply_async((i,), producer=producer)


def close() -> None:
    pass
