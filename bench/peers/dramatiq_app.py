"""Dramatiq with its Redis broker and default middleware. Its messages are acked after
the actor returns (at-least-once by default); ``max_retries=0`` only because the task
cannot fail. Worker: ``dramatiq dramatiq_app --processes 2 --threads 1``.
"""

from __future__ import annotations

import os

import dramatiq
import probe
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0, queue_name="bench")
def noop(i: int) -> None:
    probe.hit(i)


def enqueue(i: int) -> None:
    noop.send(i)


def fill(n: int) -> None:
    for i in range(n):
        noop.send(i)


def close() -> None:
    pass
