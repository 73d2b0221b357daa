-- next_due.lua: the earliest run_at of the pending jobs of some queues (read only).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2..] queue names
-- Returns: the earliest run_at as stored (text that reads back as the same double), or
--          false when no job of these queues is pending.
-- Invariants: writes nothing. Every pending job is in its queue's sched set (score
--          run_at) or ready set (score -priority, member _rk = run_at in order-preserving
--          hex, then the id): the first member of each priority in the ready set has the
--          earliest run_at of that priority, so one look per priority is enough.

local best, best_text = nil, false
local function consider(text)
  local x = tonumber(text)
  if best == nil or x < best then
    best, best_text = x, text
  end
end
for i = 2, #ARGV do
  local queue = ARGV[i]
  local first = redis.call('ZRANGE', k_sched(queue), '0', '0', 'WITHSCORES')
  if first[2] then
    consider(first[2])
  end
  local ready = k_ready(queue)
  local rank = 0
  while true do
    local m = redis.call('ZRANGE', ready, rank, rank, 'WITHSCORES')
    if not m[1] then
      break
    end
    local f = redis.call('HMGET', k_job(string.sub(m[1], 17)), 'state', 'run_at', '_rk')
    if f[1] == 'pending' and f[3] == m[1] then
      consider(f[2])
      rank = redis.call('ZCOUNT', ready, '-inf', m[2]) -- the first of the next priority
    else
      rank = rank + 1 -- dangling entry (the claim script drops it)
    end
  end
end
return best_text
