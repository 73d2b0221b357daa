-- Spoolhouse SQLite schema, migration 5.
--
-- Tables
--   jobs: rebuilt with the same columns, in the same order, and the same rows.
--     Only the CHECK on state changes: "state IN (five names)" made SQLite
--     build a temporary B-tree of the five names for every row inserted and
--     every UPDATE that sets state (a third of the CPU time of a bulk insert);
--     the same rule written as a chain of "=" is a few comparisons.
--
-- Indexes
--   Recreated as migration 4 left them (DROP TABLE drops them with the table).
--
-- Invariants
--   * Unchanged (see schema.sql and migrations 2-4). Rows are copied in rowid
--     order inside the migration's transaction: on a large file the first
--     open after the upgrade takes about as long as copying the jobs, and the
--     old table's pages are reused by later writes (or returned by prune).

CREATE TABLE jobs_v5 (
    id               TEXT PRIMARY KEY NOT NULL,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    payload          BLOB NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state = 'pending' OR state = 'running' OR state = 'succeeded'
                            OR state = 'failed' OR state = 'cancelled'),
    priority         INTEGER NOT NULL,
    run_at           REAL NOT NULL,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL,
    key              TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    worker_id        TEXT,
    lease            TEXT,
    lease_expires_at REAL,
    lost             INTEGER NOT NULL,
    result           BLOB,
    result_ttl       REAL,
    expires_at       REAL,
    error            TEXT,
    progress         TEXT,
    abort_requested  INTEGER NOT NULL CHECK (abort_requested = 0 OR abort_requested = 1),
    headers          TEXT
) STRICT;

INSERT INTO jobs_v5 (
    rowid, id, task, queue, payload, state, priority, run_at, attempt, max_attempts, timeout,
    key, created_at, started_at, finished_at, worker_id, lease, lease_expires_at, lost, result,
    result_ttl, expires_at, error, progress, abort_requested, headers
)
SELECT
    rowid, id, task, queue, payload, state, priority, run_at, attempt, max_attempts, timeout,
    key, created_at, started_at, finished_at, worker_id, lease, lease_expires_at, lost, result,
    result_ttl, expires_at, error, progress, abort_requested, headers
FROM jobs ORDER BY rowid;

DROP TABLE jobs;

ALTER TABLE jobs_v5 RENAME TO jobs;

CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'pending';

CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';

CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
    WHERE key IS NOT NULL AND state IN ('pending', 'running');

CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE INDEX jobs_state ON jobs (state, id);

CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE INDEX jobs_task ON jobs (task, id);

CREATE INDEX jobs_key ON jobs (key, id) WHERE key IS NOT NULL;

CREATE INDEX jobs_task_started ON jobs (task, started_at) WHERE started_at IS NOT NULL;
