-- extend_leases.lua: heartbeat; push the expiry of every lease still held.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] new lease_expires_at  [3..] pairs of job id, token
-- Returns: per pair, 'held', 'abort' (held, cancel requested) or 'lost'.
-- Invariants: only a running job whose lease equals the token is touched; the
--          running zset score stays equal to lease_expires_at.

local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local ok, abort = held(id, ARGV[i + 1])
  if ok then
    redis.call('HSET', k_job(id), 'lease_expires_at', ARGV[2])
    redis.call('ZADD', K_RUNNING, ARGV[2], id)
    out[#out + 1] = abort and 'abort' or 'held'
  else
    out[#out + 1] = 'lost'
  end
end
return out
