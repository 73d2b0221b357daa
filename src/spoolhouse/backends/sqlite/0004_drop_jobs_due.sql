-- Spoolhouse SQLite schema, migration 4.
--
-- Indexes
--   jobs_due   dropped. next_due and claim's look-before-lock read the first
--              jobs_claim entry of each priority level of a queue instead
--              (jobs_claim is ordered by run_at within a level, so that entry
--              is the level's earliest job): one index probe per level, still
--              independent of the backlog. Every enqueue, claim, retry and
--              release wrote one more B-tree page for jobs_due.
--
-- Invariants
--   * Unchanged; no row is touched, so the migration takes no longer on a
--     large file than on an empty one.

DROP INDEX jobs_due;
