-- fail.lua: running -> failed (the dead letter state).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token  [5] error  [6] expires_at, or '' for none
--       [7] stats minute of now (floor(now / 60)), or '' to count nothing
-- Returns: 1, or 0 when the token is not current (nothing changed).
-- Invariants: fencing by token; the unique key is freed; the job leaves the task's
--          running count; one failure is counted in the minute [7].

if not held(ARGV[3], ARGV[4]) then
  return 0
end
finish(ARGV[3], 'failed', ARGV[2], ARGV[5], ARGV[6])
tally(ARGV[7], 'f')
return 1
