"""A producer process (a simulated web worker): spools ``--count`` jobs one by one.

Writes one line per acknowledged job to ``--out``: ``<job_id> <start_ns> <ack_ns>``
(the wall-clock time before ``.spool()`` and after it returned), and
``ERR <type>: <message>`` for every call that raised. With ``--go`` it first
waits for that file to exist, so that many producers start together.

    python -m sh_producer --task noop --count 1000 --out ids.txt [--go go] [--sleep-max 0.05] [--rate 50]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import sh_chaos_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True, choices=["noop", "sleepy"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--go", default=None)
    parser.add_argument("--sleep-max", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="jobs per second (0: as fast as possible)")
    args = parser.parse_args(argv)

    sp = sh_chaos_app.spooler
    if sp is None:
        print("SPOOLHOUSE_DB is not set", file=sys.stderr)
        return 2
    task = sp.registry.get(args.task)
    rng = random.Random(args.seed)
    sp.backend.counts()  # open the connection (and the schema) before the start line
    if args.go:
        deadline = time.monotonic() + 60
        while not os.path.exists(args.go):
            if time.monotonic() > deadline:
                print("no go file after 60 s", file=sys.stderr)
                return 2
            time.sleep(0.01)
    lines: list[str] = []
    errors = 0
    began = time.monotonic()
    for i in range(args.count):
        if args.rate > 0:  # the load's shape (a steady request rate), not synchronisation
            ahead = began + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        call_args: tuple[object, ...] = (i,) if args.task == "noop" else (i, rng.uniform(0, args.sleep_max))
        t0 = time.time_ns()
        try:
            handle = task.spool(*call_args)
        except Exception as exc:  # every error is a finding; keep going and report it
            errors += 1
            lines.append(f"ERR {type(exc).__name__}: {str(exc)[:300]}".replace("\n", " "))
            continue
        t1 = time.time_ns()
        lines.append(f"{handle.id} {t0} {t1}")
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    print(f"producer {os.getpid()}: {args.count - errors} spooled, {errors} errors", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
