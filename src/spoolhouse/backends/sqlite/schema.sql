-- Spoolhouse SQLite schema, migration 1 (the schema version lives in PRAGMA user_version).
--
-- Tables
--   jobs: one row per job; the columns are the fields of spoolhouse.job.Job, in order.
--   schedules: last tick of each periodic schedule (added by migration 2,
--     0002_schedules_keys_limits.sql, which also adds the jobs_key and
--     jobs_task_started indexes and documents their invariants).
--   stats: outcomes per minute (added by migration 3, 0003_headers_stats.sql).
--   Later fields of Job are added as columns by later migrations (0003: headers).
--
-- Invariants
--   * state is one of pending, running, succeeded, failed, cancelled (CHECK).
--   * At most one live job (pending or running) per non-NULL key: the partial
--     unique index jobs_live_key enforces it; enqueue and requeue look first and
--     return the existing job or refuse, so the index never has to reject a write.
--     (Since migration 2 a succeeded job that has not expired holds its key too.)
--   * A running job has lease (its fencing token) and lease_expires_at; every
--     transition out of running matches id, state = 'running' AND lease = token
--     in one UPDATE, and clears both.
--   * Times are Unix seconds as REAL (STRICT: a non-number is refused, an
--     integer is stored as REAL), so comparisons never parse text.
--   * payload and result are opaque BLOBs; error and progress are JSON text.
--   * Every write runs inside BEGIN IMMEDIATE ... COMMIT.
--
-- Indexes (each one named for the statement it serves; claim must never scan)
--   jobs_claim      claim: pending jobs of a queue by priority DESC, run_at, id
--   jobs_due        next_due and the claim pre-check: pending jobs of a queue by run_at
--   jobs_lease      rescue_expired: running jobs by lease_expires_at
--   jobs_live_key   unique key of live jobs
--   jobs_expires    prune: jobs with an expiry, by expires_at
--   jobs_state      list_jobs(state=...) newest first
--   jobs_queue      list_jobs(queue=...) newest first
--   jobs_task       list_jobs(task=...) newest first

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,  -- time-ordered UUID: newest first = id DESC
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    payload          BLOB NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
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
    abort_requested  INTEGER NOT NULL CHECK (abort_requested IN (0, 1))
) STRICT;

CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'pending';

CREATE INDEX jobs_due ON jobs (queue, run_at) WHERE state = 'pending';

CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';

CREATE UNIQUE INDEX jobs_live_key ON jobs (key)
    WHERE key IS NOT NULL AND state IN ('pending', 'running');

CREATE INDEX jobs_expires ON jobs (expires_at) WHERE expires_at IS NOT NULL;

CREATE INDEX jobs_state ON jobs (state, id);

CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE INDEX jobs_task ON jobs (task, id);
