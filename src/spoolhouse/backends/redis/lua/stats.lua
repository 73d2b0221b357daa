-- stats.lua: outcomes per minute, from a first minute on (read only).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] first minute (floor(since / 60), or '-inf')
-- Returns: a flat list, four entries per minute in stat_minutes from [2] on, in minute
--          order: the minute (decimal text), then the succeeded, failed and retried
--          counts (absent fields count 0).
-- Invariants: writes nothing; one script, so the counts are those of one moment.

local out = {}
local minutes = redis.call('ZRANGEBYSCORE', K_STAT_MINUTES, ARGV[2], '+inf')
for _, minute in ipairs(minutes) do
  local c = redis.call('HMGET', K_STATS, minute .. ':s', minute .. ':f', minute .. ':r')
  out[#out + 1] = minute
  out[#out + 1] = tonumber(c[1] or '0')
  out[#out + 1] = tonumber(c[2] or '0')
  out[#out + 1] = tonumber(c[3] or '0')
end
return out
