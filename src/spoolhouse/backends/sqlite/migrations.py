"""Numbered schema migrations, applied on open.

The database's schema version is ``PRAGMA user_version``: 0 for a new file,
``n`` after migration ``n``. Migration 1 is ``schema.sql``, migration ``n``
is ``000n_*.sql``; later ones are appended to :data:`MIGRATIONS` and never
edited once released. Each pending
migration runs inside one ``BEGIN IMMEDIATE`` transaction together with the
``user_version`` bump, so two processes opening a new file at once apply it
exactly once, and a crash leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources

from ...errors import BackendUnavailable


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``version`` is what ``user_version`` becomes."""

    version: int
    name: str
    sql: str


def _packaged(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the jobs table", _packaged("schema.sql")),
    Migration(
        2,
        "schedules table; key and rate-limit indexes",
        _packaged("0002_schedules_keys_limits.sql"),
    ),
    Migration(3, "jobs.headers; stats table", _packaged("0003_headers_stats.sql")),
    Migration(4, "drop jobs_due (jobs_claim serves next_due)", _packaged("0004_drop_jobs_due.sql")),
    Migration(
        5,
        "rebuild jobs: CHECKs without IN lists",
        _packaged("0005_jobs_checks_without_lists.sql"),
    ),
    Migration(
        6,
        "jobs_state replaced by jobs_failed (failed and cancelled jobs only)",
        _packaged("0006_state_index_for_failures.sql"),
    ),
    Migration(7, "inbox table for single enqueues; all_jobs view", _packaged("0007_inbox.sql")),
)

#: The schema version this code reads and writes.
SCHEMA_VERSION = MIGRATIONS[-1].version


def split_statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (comments and blank text dropped).

    ``sqlite3.Connection.executescript`` commits any open transaction first, so
    the statements are run one by one inside our own transaction instead.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statement = _strip_comments(buffer)
            if statement:
                statements.append(buffer.strip())
            buffer = ""
    return statements


def _strip_comments(text: str) -> str:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";").strip()


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, *, location: str) -> bool:
    """Bring the schema to :data:`SCHEMA_VERSION`; return whether anything was applied.

    ``conn`` is in autocommit mode (``isolation_level=None``). Raises
    :class:`BackendUnavailable` when the file was written by a newer Spoolhouse.
    """
    if _check(conn, location) == SCHEMA_VERSION:
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _check(conn, location)  # another process may have migrated meanwhile
        applied = False
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            # PRAGMA takes no parameters; the version is an int from our own table
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            applied = True
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied


def _check(conn: sqlite3.Connection, location: str) -> int:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise BackendUnavailable(
            f"the Spoolhouse database {location} has schema version {version}, but this "
            f"Spoolhouse knows versions up to {SCHEMA_VERSION}: upgrade spoolhouse in this "
            "environment (a newer release wrote the file)"
        )
    return version
