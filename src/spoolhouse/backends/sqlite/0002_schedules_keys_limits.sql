-- Spoolhouse SQLite schema, migration 2.
--
-- Tables
--   schedules: the last tick recorded for each periodic schedule.
--     name  the schedule's name (primary key)
--     tick  Unix seconds of the last tick that enqueued a job (REAL)
--
-- Invariants
--   * schedule_tick reads and writes a schedules row and inserts the tick's job
--     in one BEGIN IMMEDIATE transaction: of many schedulers racing for one
--     tick, exactly one records it and enqueues.
--   * A unique key is held by a live job, or by a succeeded job whose
--     expires_at is NULL or later than now; jobs_key finds every job with a
--     key, whatever its state (jobs_live_key still allows one live job per key).
--
-- Indexes
--   jobs_key            enqueue's key lookup across live and succeeded jobs
--   jobs_task_started   claim's rate limits: jobs of a task started since a time

CREATE TABLE schedules (
    name TEXT PRIMARY KEY NOT NULL,
    tick REAL NOT NULL
) STRICT;

CREATE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL;

CREATE INDEX jobs_task_started ON jobs (task, started_at) WHERE started_at IS NOT NULL;
