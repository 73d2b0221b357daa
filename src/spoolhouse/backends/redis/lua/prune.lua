-- prune.lua: delete up to `limit` final jobs whose expires_at <= now.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] limit  [4] first stats minute to keep (floor((now -
--       retention) / 60)), or '' to trim nothing  [5] most stats minutes trimmed
-- Returns: how many jobs were deleted.
-- Invariants: only final jobs are in the expiring zset (scored by expires_at), so
--          live jobs are never pruned; a deleted job leaves no index entry (nor its
--          uniq entry, nor its bykey:<key> entry, nor its start in started:<task>); the
--          stats minutes before [4] go (up to [5] of them, oldest first) with their
--          fields (a field of stats is never left without its minute in stat_minutes).

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
if ARGV[4] ~= '' then
  local old = redis.call('ZRANGEBYSCORE', K_STAT_MINUTES, '-inf', '(' .. ARGV[4], 'LIMIT', 0,
    tonumber(ARGV[5]))
  for _, minute in ipairs(old) do
    redis.call('HDEL', K_STATS, minute .. ':s', minute .. ':f', minute .. ':r')
    redis.call('ZREM', K_STAT_MINUTES, minute)
  end
end
return n
