-- Spoolhouse SQLite schema, migration 7.
--
-- Tables
--   inbox: pending jobs stored by a single enqueue and not yet moved into jobs.
--     The same columns, types and CHECKs as jobs, WITHOUT ROWID and with no
--     other index, so that storing a job writes one B-tree page instead of
--     five (the jobs row, its id index, jobs_claim, jobs_queue, jobs_task).
--     At synchronous=FULL the fsync of an enqueue's commit is the largest part
--     of its cost, and it grows with the pages the commit appends to the WAL.
--     Every write that needs to see pending jobs (a claim, a cancel) first
--     moves the whole inbox into jobs, in its own transaction (see
--     SQLiteBackend._absorb); many jobs moved at once share their index pages.
--
-- Views
--   all_jobs: jobs and inbox together, for people reading the file with SQL.
--     A later migration that rebuilds jobs (CREATE, copy, DROP, RENAME, as
--     migration 5 did) must drop all_jobs first and create it again after.
--
-- Invariants
--   * An id is in jobs or in inbox, never both: an enqueue into inbox checks
--     jobs for its id in the same statement, and the move inserts and deletes
--     in one transaction.
--   * Every inbox row is a pending job without a unique key (keyed jobs, batches
--     and periodic jobs go straight into jobs).
--   * Readers see both tables in one snapshot: get() is one statement, and
--     list_jobs() and counts() read both inside one read transaction.
--   * The inbox stays small: workers move it on every claim (the oldest 1,000
--     rows at most per claim), and a producer moves it itself after every 250
--     jobs it put there. On a full disk a move is undone and skipped: claims
--     go on with the jobs already in jobs.
--   * Upgrade: a process still running the previous release never moves the
--     inbox; restart every worker and producer after the upgrade (a worker of
--     this release moves whatever an older one left waiting).

CREATE TABLE inbox (
    id               TEXT PRIMARY KEY NOT NULL,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    payload          BLOB NOT NULL,
    state            TEXT NOT NULL CHECK (state = 'pending'),
    priority         INTEGER NOT NULL,
    run_at           REAL NOT NULL,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL,
    key              TEXT CHECK (key IS NULL),
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
) STRICT, WITHOUT ROWID;

-- The columns are named: a column added to jobs later (ALTER TABLE ... ADD COLUMN)
-- leaves this view as it is, until a migration adds it to inbox and here too.
CREATE VIEW all_jobs AS
SELECT
    id, task, queue, payload, state, priority, run_at, attempt, max_attempts,
    timeout, key, created_at, started_at, finished_at, worker_id, lease,
    lease_expires_at, lost, result, result_ttl, expires_at, error, progress,
    abort_requested, headers
FROM jobs
UNION ALL
SELECT
    id, task, queue, payload, state, priority, run_at, attempt, max_attempts,
    timeout, key, created_at, started_at, finished_at, worker_id, lease,
    lease_expires_at, lost, result, result_ttl, expires_at, error, progress,
    abort_requested, headers
FROM inbox;
