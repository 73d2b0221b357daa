"""SQL text and row mapping of the SQLite backend's jobs table.

The statements are module constants, so each text is compiled once per
connection and then found in the connection's statement cache. Row mapping
converts between :class:`~spoolhouse.job.Job` and the tuple of its columns.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Sequence
from typing import Any, Final

from ...job import FIELDS, Job, JobState, job_from_values

#: Column names, in the order of the Job dataclass fields (and of the table).
COLUMNS: Final = FIELDS
_COLUMN_LIST: Final = ", ".join(COLUMNS)
_SELECT: Final = f"SELECT {_COLUMN_LIST} FROM jobs"
_BY_ID: Final = f"{_SELECT} WHERE id = ?"

# -- the inbox (migration 7) -----------------------------------------------------------
# A single enqueue of a job without a key stores it in inbox: one B-tree page
# instead of five. SQLiteBackend._absorb moves it into jobs (claims, bulk writes,
# and a producer every _INBOX_MOVE_EVERY jobs; cancel moves its one job). Reads
# that may meet a pending job read both tables in one snapshot.
_INBOX_SELECT: Final = f"SELECT {_COLUMN_LIST} FROM inbox"
#: One statement, so one snapshot: a move between two reads cannot hide the job.
_BY_ID_ANY: Final = f"{_SELECT} WHERE id = ?1 UNION ALL {_INBOX_SELECT} WHERE id = ?1"
_INBOX_ANY: Final = "SELECT 1 FROM inbox LIMIT 1"
# A move takes the oldest rows first, up to a bound (see SQLiteBackend._absorb):
# the id of the last row of the chunk, then the copy and the delete up to it.
_INBOX_CHUNK_END: Final = "SELECT max(id) FROM (SELECT id FROM inbox ORDER BY id LIMIT ?)"
_ABSORB_UPTO: Final = (
    f"INSERT INTO jobs ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM inbox WHERE id <= ? "
    "ON CONFLICT (id) DO NOTHING"
)
_INBOX_DELETE_UPTO: Final = "DELETE FROM inbox WHERE id <= ?"
_ABSORB_ONE: Final = (
    f"INSERT INTO jobs ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM inbox WHERE id = ? "
    "ON CONFLICT (id) DO NOTHING"
)
_INBOX_EARLIEST: Final = "SELECT queue, min(run_at) FROM inbox GROUP BY queue"

# REAL columns whose whole values SQLite may hand back as int (INSERT ... RETURNING
# skips the REAL affinity step in 3.40), so they are converted on the way out.
_FLOAT_INDEXES: Final = tuple(
    i for i, f in enumerate(dataclasses.fields(Job)) if str(f.type).startswith("float")
)
_STATE_INDEX: Final = COLUMNS.index("state")
_ABORT_INDEX: Final = COLUMNS.index("abort_requested")

_FINAL_SQL: Final = "('succeeded', 'failed', 'cancelled')"

# Claim walks the pending jobs of one queue one priority level at a time,
# highest first. Within a level, jobs_claim is ordered by run_at, so the due
# jobs are one index range and the walk stops after ``limit`` of them. A single
# ORDER BY priority DESC over all levels would instead step over every future
# job of a higher priority before reaching a due one of a lower priority.
# INDEXED BY pins the plans: without statistics the planner may prefer
# another index and sort. Cost: O(levels visited x log n), whatever the backlog.
_TOP_PRIORITY: Final = (
    "SELECT priority FROM jobs INDEXED BY jobs_claim WHERE state = 'pending' AND queue = ? "
    "ORDER BY priority DESC LIMIT 1"
)
_NEXT_PRIORITY: Final = (
    "SELECT priority FROM jobs INDEXED BY jobs_claim "
    "WHERE state = 'pending' AND queue = ? AND priority < ? ORDER BY priority DESC LIMIT 1"
)
_CLAIM: Final = f"""
UPDATE jobs
   SET state = 'running',
       attempt = attempt + 1,
       started_at = :now,
       worker_id = :worker_id,
       lease = lower(hex(randomblob(8))),
       lease_expires_at = :expires
 WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_claim
               WHERE state = 'pending' AND queue = :queue AND priority = :priority
                 AND run_at <= :now
               ORDER BY run_at, id
               LIMIT :limit)
RETURNING {_COLUMN_LIST}
"""

# With per-task limits the ids are picked in Python (see SQLiteBackend._pick).
_CLAIM_IDS: Final = """
UPDATE jobs
   SET state = 'running',
       attempt = attempt + 1,
       started_at = ?,
       worker_id = ?,
       lease = lower(hex(randomblob(8))),
       lease_expires_at = ?
 WHERE state = 'pending' AND id IN ({ids})
RETURNING {columns}
"""

# The job holding a key: the live one (at most one, jobs_live_key), else a
# succeeded one that has not expired.
_LIVE_KEY: Final = f"{_SELECT} WHERE key = ? AND state IN ('pending', 'running')"
_SUCCEEDED_KEY: Final = (
    f"{_SELECT} INDEXED BY jobs_key WHERE key = ? AND state = 'succeeded' "
    "AND (expires_at IS NULL OR expires_at > ?) LIMIT 1"
)

# The earliest pending job of the highest priority level of a queue (the first
# entry of jobs_claim for the queue), and of the next lower level: one index
# probe per level. The earliest run_at of a queue is the least of its levels'
# first entries, so next_due and claim's look-before-lock need no index of
# their own (migration 4 dropped jobs_due, one B-tree less per enqueue and claim).
_LEVEL_HEAD: Final = (
    "SELECT priority, run_at FROM jobs INDEXED BY jobs_claim "
    "WHERE state = 'pending' AND queue = ? ORDER BY priority DESC, run_at LIMIT 1"
)
_NEXT_LEVEL_HEAD: Final = (
    "SELECT priority, run_at FROM jobs INDEXED BY jobs_claim "
    "WHERE state = 'pending' AND queue = ? AND priority < ? "
    "ORDER BY priority DESC, run_at LIMIT 1"
)

# Rescue: every right-hand side sees the row as it was before the UPDATE. A job
# put back keeps its run_at (its place in the queue), like release.
_RESCUE_SET: Final = """
   SET lost = lost + 1,
       error = :error,
       lease = NULL,
       lease_expires_at = NULL,
       state = CASE WHEN attempt >= max_attempts OR lost + 1 >= :max_lost
                    THEN 'failed' ELSE 'pending' END,
       finished_at = CASE WHEN attempt >= max_attempts OR lost + 1 >= :max_lost
                          THEN :now ELSE finished_at END,
       worker_id = CASE WHEN attempt >= max_attempts OR lost + 1 >= :max_lost
                        THEN worker_id ELSE NULL END,
       expires_at = CASE WHEN attempt >= max_attempts OR lost + 1 >= :max_lost
                         THEN :expires_at ELSE expires_at END
"""

# Outcome counters per minute (stats table), bumped inside the transition's transaction.
_BUMP: Final = {
    column: (
        f"INSERT INTO stats (minute, {column}) VALUES (?, ?) "
        f"ON CONFLICT (minute) DO UPDATE SET {column} = {column} + excluded.{column}"
    )
    for column in ("succeeded", "failed", "retried")
}
#: How long per-minute stats are kept (the contract asks for at least 24 hours).
STATS_RETENTION: Final = 7 * 86400.0

_COMPLETE = (
    "UPDATE jobs SET state = 'succeeded', result = ?, finished_at = ?, expires_at = ?, "
    "lease = NULL, lease_expires_at = NULL "
    "WHERE id = ? AND state = 'running' AND lease = ?"
)


def _to_job(row: Sequence[Any]) -> Job:
    """The Job of a row of :data:`COLUMNS` (4.6 us per job through ``Job(**dict)``,
    1.9 us through :func:`job_from_values`; a worker decodes every job it claims)."""
    values = list(row)
    for i in _FLOAT_INDEXES:
        if values[i].__class__ is int:
            values[i] = float(values[i])
    values[_STATE_INDEX] = _STATES[values[_STATE_INDEX]]
    values[_ABORT_INDEX] = bool(values[_ABORT_INDEX])
    return job_from_values(values)


_STATES: Final = {state.value: state for state in JobState}


def _to_row(job: Job) -> tuple[Any, ...]:
    """Every column, in the order of :data:`COLUMNS`.

    state and abort_requested are bound as plain ``str`` and ``int``: sqlite3
    binds a str subclass (JobState) or a bool only after a failed adapter
    lookup that raises and discards an AttributeError, about 1 us per value.
    """
    return (
        job.id,
        job.task,
        job.queue,
        job.payload,
        _STATE_TEXT[job.state],
        job.priority,
        job.run_at,
        job.attempt,
        job.max_attempts,
        job.timeout,
        job.key,
        job.created_at,
        job.started_at,
        job.finished_at,
        job.worker_id,
        job.lease,
        job.lease_expires_at,
        job.lost,
        job.result,
        job.result_ttl,
        job.expires_at,
        job.error,
        job.progress,
        1 if job.abort_requested else 0,
        job.headers,
    )


_STATE_TEXT: Final = {state: state.value for state in JobState}

_float_values: Final = operator.attrgetter(*(COLUMNS[i] for i in _FLOAT_INDEXES))


def _stored(job: Job) -> Job:
    """The job as a read of the row just inserted from it would return it.

    That is ``job`` itself unless a REAL column was given an int (stored as
    REAL, read back as float) or abort_requested is not a bool.
    """
    for value in _float_values(job):
        if value is not None and type(value) is not float:
            return _to_job(_to_row(job))
    if type(job.abort_requested) is not bool or type(job.state) is not JobState:
        return _to_job(_to_row(job))
    return job


# -- inserts -----------------------------------------------------------------------
# sqlite3 binds None through its adapter lookup, about 1.5 us per value, and a
# new job has a dozen NULL columns (lease, result, error, ...). So an INSERT
# names only the job's non-NULL columns (the others are NULL by default); its
# text depends on which columns those are, and is built once per combination.
# No RETURNING: the stored row is the Job that was bound (see _stored).
_NONES: Final = (None,) * len(COLUMNS)
_INSERTS: dict[tuple[bool, ...], tuple[str, str]] = {}
_INBOX_INSERTS: dict[tuple[bool, ...], str] = {}
_MAX_INSERTS: Final = 256  # combinations kept; a new job uses a handful


def _compact_row(job: Job) -> tuple[tuple[bool, ...], tuple[Any, ...]]:
    """Which columns of ``job`` are not NULL (over :data:`COLUMNS`), and their values."""
    row = _to_row(job)
    present = tuple(map(operator.is_not, row, _NONES))
    return present, tuple(itertools.compress(row, present))


def _insert_statements(present: tuple[bool, ...]) -> tuple[str, str]:
    """``(insert, insert_new)`` for the columns flagged in ``present``.

    ``insert_new`` stores the row unless its id is stored (a producer retrying
    an enqueue that did land); rowcount says which. Its conflict target is the
    primary key only, so any other constraint still raises.
    """
    statements = _INSERTS.get(present)
    if statements is None:
        columns = ", ".join(itertools.compress(COLUMNS, present))
        marks = ", ".join("?" * sum(present))
        insert = f"INSERT INTO jobs ({columns}) VALUES ({marks})"
        statements = (insert, f"{insert} ON CONFLICT (id) DO NOTHING")
        if len(_INSERTS) < _MAX_INSERTS:
            _INSERTS[present] = statements
    return statements


def _inbox_insert(present: tuple[bool, ...]) -> str:
    """The INSERT into inbox for the columns flagged in ``present``.

    It stores the row unless its id is in inbox or in jobs (a producer retrying
    an enqueue that did land, and was moved since); its parameters are the
    row's values, then the id once more. rowcount says whether it stored.
    """
    statement = _INBOX_INSERTS.get(present)
    if statement is None:
        columns = ", ".join(itertools.compress(COLUMNS, present))
        marks = ", ".join("?" * sum(present))
        statement = (
            f"INSERT INTO inbox ({columns}) SELECT {marks} "
            "WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = ?) ON CONFLICT (id) DO NOTHING"
        )
        if len(_INBOX_INSERTS) < _MAX_INSERTS:
            _INBOX_INSERTS[present] = statement
    return statement
