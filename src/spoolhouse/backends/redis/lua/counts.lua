-- counts.lua: the number of jobs per queue and state (read only).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2..] the states
-- Returns: a flat list, three entries per non-empty jobs:<state>:<queue> set of a queue
--          in `queues`: the queue, the state, its size.
-- Invariants: writes nothing; one script, so the counts are those of one moment.

local out = {}
for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  for i = 2, #ARGV do
    local n = redis.call('ZCARD', k_jobs(ARGV[i] .. ':' .. queue))
    if n > 0 then
      out[#out + 1] = queue
      out[#out + 1] = ARGV[i]
      out[#out + 1] = n
    end
  end
end
return out
