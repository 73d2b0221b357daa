-- requeue.lua: failed or cancelled -> pending, due now, attempts and losses reset.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] _rk head (now in order-preserving hex)
-- Returns: 1, or 0 when the job is missing, in another state, or its unique key
--          is held by another live job.
-- Invariants: at most one live job per unique key; a succeeded job holding the key
--          (uniq_done) does not prevent the requeue; workers are woken.

local id = ARGV[3]
local jk = k_job(id)
local f = redis.call('HMGET', jk, 'state', 'key')
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then
  return 0
end
if f[2] then
  local holder = redis.call('HGET', K_UNIQ, f[2])
  if holder and holder ~= id then
    local state = redis.call('HGET', k_job(holder), 'state')
    if state == 'pending' or state == 'running' then
      return 0
    end
  end
end
unindex(id)
redis.call('HSET', jk, 'state', 'pending', 'run_at', ARGV[2], '_rk', ARGV[4] .. id,
  'attempt', '0', 'lost', '0', 'abort_requested', '0')
redis.call('HDEL', jk, 'finished_at', 'expires_at', 'worker_id')
local wake = {}
index(id, tonumber(ARGV[2]), wake)
wake_up(wake)
return 1
