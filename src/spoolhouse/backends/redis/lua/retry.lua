-- retry.lua: running -> pending at run_at, keeping the error.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token  [5] run_at  [6] _rk head (run_at
--       in order-preserving hex)  [7] error  [8] '1' to count the attempt, '0' to give it back
--       [9] stats minute of now (floor(now / 60)), or '' to count nothing
-- Returns: 1, or 0 when the token is not current (nothing changed).
-- Invariants: fencing by token; the job keeps its unique key; workers are woken; one
--          retry is counted in the minute [9] (also when the attempt is given back).

local id = ARGV[3]
if not held(id, ARGV[4]) then
  return 0
end
local jk = k_job(id)
local attempt = tonumber(redis.call('HGET', jk, 'attempt') or '0')
if ARGV[8] ~= '1' then
  attempt = attempt - 1
end
unindex(id)
redis.call('HSET', jk, 'state', 'pending', 'run_at', ARGV[5], '_rk', ARGV[6] .. id,
  'error', ARGV[7], 'attempt', fmt(attempt))
redis.call('HDEL', jk, 'lease', 'lease_expires_at', 'worker_id')
local wake = {}
index(id, tonumber(ARGV[2]), wake)
wake_up(wake)
tally(ARGV[9], 'r')
return 1
