"""A producer process that spools one task with the same unique key, again and again.

Writes one line per ``.spool()`` call to ``--out``: the id it returned, or
``ERR <type>: <message>``. With ``--go`` it first waits for that file, so that
many producers start together.

    python -m sched_producer --key report:42 --count 50 --out ids.txt [--ready r --go go] [--tag p3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import sched_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--go", default=None)
    parser.add_argument("--ready", default=None, help="file to create once ready for --go")
    parser.add_argument("--tag", default="producer")
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)

    sp = sched_app.spooler
    if sp is None:
        print("SPOOLHOUSE_DB is not set", file=sys.stderr)
        return 2
    task = sp.registry.get("keyed").options(key=args.key)
    sp.backend.counts()  # open the connection (and the schema) before the start line
    if args.ready:
        open(args.ready, "w").close()
    if args.go:
        deadline = time.monotonic() + 60
        while not os.path.exists(args.go):
            if time.monotonic() > deadline:
                print("no go file after 60 s", file=sys.stderr)
                return 2
            time.sleep(0.005)
    lines: list[str] = []
    errors = 0
    for _ in range(args.count):
        try:
            handle = task.spool(args.tag, args.max_seconds)
        except Exception as exc:  # every error is a finding; keep going and report it
            errors += 1
            lines.append(f"ERR {type(exc).__name__}: {str(exc)[:300]}".replace("\n", " "))
            continue
        lines.append(handle.id)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + ("\n" if lines else ""))
    print(f"producer {os.getpid()}: {args.count - errors} spooled, {errors} errors", flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
