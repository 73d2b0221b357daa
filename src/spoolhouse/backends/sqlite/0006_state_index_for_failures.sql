-- Spoolhouse SQLite schema, migration 6.
--
-- Indexes
--   jobs_state   dropped. It held every job under (state, id), so every claim
--                moved an entry (pending -> running) and every success moved it
--                again (running -> succeeded): two deletes and two inserts per
--                job inside the write transaction that all workers queue for,
--                a fifth of a worker's time holding the write lock.
--   jobs_failed  (state, id) of failed and cancelled jobs only: the rare states
--                a listing must find among many others. No claim or success
--                writes it.
--
-- How list_jobs(state=...) reads each state now (see SQLiteBackend.list_jobs):
--   failed, cancelled  jobs_failed, newest first
--   running            jobs_lease (every running job), sorted: running jobs are
--                      bounded by the workers' concurrency and prefetch
--   pending            the newest rows first (a backlog is the newest jobs);
--                      when they do not fill the page, jobs_claim (every pending
--                      job), sorted
--   succeeded          the table newest first (the id order), filtered: most
--                      stored jobs are succeeded ones
--
-- Invariants
--   * Unchanged. No row is touched; building jobs_failed reads the table once.
--     A process still running the previous release fails its limited claims
--     with "no such index: jobs_state" and must be restarted.

DROP INDEX jobs_state;

CREATE INDEX jobs_failed ON jobs (state, id) WHERE state = 'failed' OR state = 'cancelled';
