-- rescue_expired.lua: rescue (see rescue.lua) a batch of running jobs whose lease
-- expired strictly before now.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] max_lost  [4] error  [5] batch size  [6] expires_at
--       of a job that fails, or '' for none  [7] stats minute of now (floor(now / 60)),
--       or '' to count nothing
-- Returns: the HGETALL of each rescued job; fewer than the batch size means done.
-- Invariants: as rescue.lua; the running zset is scored by lease_expires_at, so the
--          range (-inf, now) is exactly the expired leases.

local ids = redis.call('ZRANGEBYSCORE', K_RUNNING, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
local wake = {}
for _, id in ipairs(ids) do
  if redis.call('HGET', k_job(id), 'state') == 'running' then
    out[#out + 1] = rescue_one(id, ARGV[2], ARGV[7], tonumber(ARGV[3]), ARGV[4], ARGV[6], wake)
  else
    redis.call('ZREM', K_RUNNING, id) -- dangling entry
  end
end
wake_up(wake)
return out
