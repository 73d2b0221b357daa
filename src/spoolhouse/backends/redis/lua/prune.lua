-- prune.lua: delete up to `limit` final jobs whose expires_at <= now.
--
-- KEYS: ids, uniq, counts, running, expiring, busy, ticks, uniq_done (the fixed keys, see keys.py)
-- ARGV: [1] root  [2] now  [3] limit
-- Returns: how many jobs were deleted.
-- Invariants: only final jobs are in the expiring zset (scored by expires_at), so
--          live jobs are never pruned; a deleted job leaves no index entry (nor its
--          uniq entry, nor its start in started:<task>).

local ids = redis.call('ZRANGEBYSCORE', K_EXPIRING, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local n = 0
for _, id in ipairs(ids) do
  local state = redis.call('HGET', k_job(id), 'state')
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    delete_job(id)
    n = n + 1
  else
    redis.call('ZREM', K_EXPIRING, id) -- dangling entry
  end
end
return n
