-- release.lua: running -> pending, the attempt given back (worker shutdown).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token
-- Returns: 1, or 0 when the token is not current (nothing changed).
-- Invariants: fencing by token; the job keeps its unique key and its run_at (and _rk):
--          it was due when claimed, so it is due now and keeps its place ahead of
--          younger jobs; workers are woken.

local id = ARGV[3]
if not held(id, ARGV[4]) then
  return 0
end
local jk = k_job(id)
local attempt = tonumber(redis.call('HGET', jk, 'attempt') or '0') - 1
unindex(id)
redis.call('HSET', jk, 'state', 'pending', 'attempt', fmt(attempt))
redis.call('HDEL', jk, 'lease', 'lease_expires_at', 'worker_id')
local wake = {}
index(id, tonumber(ARGV[2]), wake)
wake_up(wake)
return 1
