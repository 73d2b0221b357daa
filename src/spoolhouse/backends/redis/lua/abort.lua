-- abort.lua: running -> cancelled: the task stopped because cancellation was requested.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token  [5] error  [6] expires_at, or '' for none
-- Returns: 1, or 0 when the token is not current (nothing changed).
-- Invariants: fencing by token; the unique key is freed; the job leaves the task's
--          running count.

if not held(ARGV[3], ARGV[4]) then
  return 0
end
finish(ARGV[3], 'cancelled', ARGV[2], ARGV[5], ARGV[6])
return 1
