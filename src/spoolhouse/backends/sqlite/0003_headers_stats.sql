-- Spoolhouse SQLite schema, migration 3.
--
-- Tables
--   jobs: gains headers, the Job.headers field (JSON object text set at spool
--     time, such as trace context; opaque to the backend, NULL when unset).
--   stats: outcomes per minute, for dashboards.
--     minute     floor(now / 60) of the transition (INTEGER primary key)
--     succeeded  complete() calls that took effect in that minute
--     failed     fail() calls, and rescues that failed the job
--     retried    retry() calls
--
-- Indexes
--   jobs_key   rebuilt as (key, id), so list_jobs(key=...) reads newest first
--              without sorting (migration 2 had it on key alone)
--
-- Invariants
--   * Every field of spoolhouse.job.Job has a column of the same name; the
--     backend selects and inserts columns by name, so their order in the table
--     does not matter.
--   * A stats row is bumped in the same transaction as the transition it
--     counts, so a rolled-back or stale-token transition counts nothing.
--     prune() deletes rows older than seven days.

ALTER TABLE jobs ADD COLUMN headers TEXT;

CREATE TABLE stats (
    minute    INTEGER PRIMARY KEY NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    retried   INTEGER NOT NULL DEFAULT 0
) STRICT;

DROP INDEX jobs_key;

CREATE INDEX jobs_key ON jobs (key, id) WHERE key IS NOT NULL;
