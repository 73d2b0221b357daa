-- complete.lua: running -> succeeded.
--
-- KEYS: ids, uniq, counts, running, expiring, busy, ticks, uniq_done (the fixed keys, see keys.py)
-- ARGV: [1] root  [2] now  [3] job id  [4] token  [5] '1' when a result is given
--       [6] result bytes  [7] expires_at, or '' for none
-- Returns: 1, or 0 when the token is not current (nothing changed).
-- Invariants: fencing by token; the job holds its unique key until its expires_at
--          (for ever without one): its uniq entry moves to uniq_done (see keep_key
--          in _lib.lua); it leaves the task's running count and enters the expiring
--          zset when it has an expiry.

local id = ARGV[3]
if not held(id, ARGV[4]) then
  return 0
end
local jk = k_job(id)
unindex(id)
redis.call('HSET', jk, 'state', 'succeeded', 'finished_at', ARGV[2])
if ARGV[5] == '1' then
  redis.call('HSET', jk, 'result', ARGV[6])
else
  redis.call('HDEL', jk, 'result')
end
if ARGV[7] ~= '' then
  redis.call('HSET', jk, 'expires_at', ARGV[7])
else
  redis.call('HDEL', jk, 'expires_at')
end
redis.call('HDEL', jk, 'lease', 'lease_expires_at')
index(id, tonumber(ARGV[2]), {})
return 1
