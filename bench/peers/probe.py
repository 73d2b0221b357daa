"""What every benchmark task calls: a timestamp record, and for latency runs a datagram.

Task side: :func:`hit` appends one fixed-size record ``(i, start, end)`` with
``O_APPEND`` to the file named by ``BENCH_PROBE`` (one ``write`` per job,
atomic between processes), and when ``BENCH_NOTIFY`` names a Unix datagram
socket, sends the same record there so a waiting client learns at once that
the job started. The cost is the same for every system measured: a
``time.time()`` pair and one or two system calls.

Driver side: :func:`count` (file size / record size) and :func:`read`.
Standard library only: imported in every interpreter and by uWSGI.
"""

from __future__ import annotations

import os
import socket
import struct
import time

RECORD = struct.Struct("<qdd")  # job index, start (epoch s), end (epoch s)

_pid = 0
_fd = -1
_sock: socket.socket | None = None
_notify = ""


def _open() -> None:
    global _pid, _fd, _sock, _notify
    _pid = os.getpid()
    _fd = os.open(os.environ["BENCH_PROBE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _notify = os.environ.get("BENCH_NOTIFY", "")
    _sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if _notify else None
    if _sock is not None:
        _sock.setblocking(False)


def hit(i: int) -> None:
    """Record that job ``i`` ran (call it first thing in the task)."""
    start = time.time()
    if _pid != os.getpid():  # first job in this process (or a forked child: RQ)
        _open()
    if _sock is not None:
        try:  # noqa: SIM105  (contextlib.suppress costs more, per job)
            _sock.sendto(RECORD.pack(i, start, start), _notify)
        except OSError:
            pass  # nobody listening: a warm-up or a late job
    os.write(_fd, RECORD.pack(i, start, time.time()))


def count(path: str) -> int:
    try:
        return os.stat(path).st_size // RECORD.size
    except FileNotFoundError:
        return 0


def read(path: str) -> list[tuple[int, float, float]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    usable = len(data) - len(data) % RECORD.size
    return [RECORD.unpack_from(data, off) for off in range(0, usable, RECORD.size)]
