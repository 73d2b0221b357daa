-- cancel.lua: pending -> cancelled; running -> abort requested; otherwise nothing.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id
-- Returns: 'cancelled', 'aborting' or 'noop'.
-- Invariants: a cancelled job frees its unique key and expires after result_ttl
--          (expires_at = now + result_ttl, kept forever when result_ttl is unset).

local id = ARGV[3]
local jk = k_job(id)
local f = redis.call('HMGET', jk, 'state', 'result_ttl')
if f[1] == 'pending' then
  unindex(id)
  redis.call('HSET', jk, 'state', 'cancelled', 'finished_at', ARGV[2])
  if f[2] then
    redis.call('HSET', jk, 'expires_at', fmt(tonumber(ARGV[2]) + tonumber(f[2])))
  else
    redis.call('HDEL', jk, 'expires_at')
  end
  index(id, tonumber(ARGV[2]), {})
  return 'cancelled'
elseif f[1] == 'running' then
  redis.call('HSET', jk, 'abort_requested', '1')
  return 'aborting'
end
return 'noop'
