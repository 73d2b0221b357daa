"""A producer process for the Redis tests: spools ``--count`` sleepy jobs, retrying each.

Like ``sh_producer`` (same output: ``<job_id> <start_ns> <ack_ns>`` per
acknowledged job, ``ERR <type>: <message>`` per call that raised), but made
for a server that goes away: each job ``i`` is spooled with the unique key
``<tag>-<i>`` and a call that raises is tried again (after a short backoff)
until it is acknowledged or ``--give-up`` seconds have passed. The key makes
the retry safe: an enqueue that Redis stored but whose reply was lost returns
the stored job on the next try instead of storing a second one.

    python -m redis_producer --count 1000 --out ids.txt --tag p [--go go] [--rate 80] [--sleep-max 0.04]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import redis_chaos_app

from spoolhouse.errors import BackendUnavailable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--go", default=None)
    parser.add_argument("--sleep-max", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second (0: as fast as possible)")
    parser.add_argument("--give-up", type=float, default=30.0, help="seconds one job is retried")
    args = parser.parse_args(argv)

    sp = redis_chaos_app.spooler
    if sp is None:
        print("SPOOLHOUSE_REDIS_URL is not set", file=sys.stderr)
        return 2
    task = sp.registry.get("sleepy")
    rng = random.Random(args.seed)
    sp.backend.counts()  # connect before the start line
    if args.go:
        deadline = time.monotonic() + 60
        while not os.path.exists(args.go):
            if time.monotonic() > deadline:
                print("no go file after 60 s", file=sys.stderr)
                return 2
            time.sleep(0.01)
    lines: list[str] = []
    failed = 0
    began = time.monotonic()
    for i in range(args.count):
        if args.rate > 0:  # the load's shape (a steady request rate), not synchronisation
            ahead = began + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        seconds = rng.uniform(0, args.sleep_max)
        bound = task.options(key=f"{args.tag}-{i}")
        give_up = time.monotonic() + args.give_up
        backoff = 0.02
        while True:
            t0 = time.time_ns()
            try:
                handle = bound.spool(i, seconds)
            except BackendUnavailable as exc:  # the server is away: note it, try again
                lines.append(f"ERR {type(exc).__name__}: {str(exc)[:300]}".replace("\n", " "))
                if time.monotonic() > give_up:
                    failed += 1
                    break
                time.sleep(backoff)  # a client's retry backoff
                backoff = min(backoff * 2, 0.5)
                continue
            lines.append(f"{handle.id} {t0} {time.time_ns()}")
            break
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    errors = sum(1 for line in lines if line.startswith("ERR "))
    print(f"producer {os.getpid()}: {args.count - failed} spooled, {errors} failed tries, "
          f"{failed} given up", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
