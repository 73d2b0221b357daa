"""The SQLite backend (the default): ``sqlite:///path/to/spool.db``.

One file shared by every process on the host; WAL, ``synchronous=FULL``,
``BEGIN IMMEDIATE`` writes, claim by ``UPDATE … RETURNING``, and cross-process
wake-ups over Unix datagram sockets. See ``docs/sqlite.md``.
"""

from __future__ import annotations

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
