-- rescue.lua: the worker holding the token died: running -> pending (due now) or failed.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token  [5] max_lost  [6] error
--       [7] expires_at of a job that fails, or '' for none  [8] stats minute of now
--       (floor(now / 60)), or '' to count nothing
-- Returns: the HGETALL of the new record, or 0 when the token is not current.
-- Invariants: fencing by token; lost + 1; fails when attempt >= max_attempts or
--          lost >= max_lost, then expiring at [7] and counted as a failure in the
--          minute [8]; a failed job frees its unique key; a job put back keeps its
--          run_at (its place in the queue) and is counted nowhere.

local id = ARGV[3]
if not held(id, ARGV[4]) then
  return 0
end
local wake = {}
local job = rescue_one(id, ARGV[2], ARGV[8], tonumber(ARGV[5]), ARGV[6], ARGV[7], wake)
wake_up(wake)
return job
