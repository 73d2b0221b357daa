-- claim.lua: move up to `limit` due jobs to running, serving queues in the order given.
--
-- KEYS: ids, uniq, counts, running, expiring (the fixed keys, see keys.py)
-- ARGV: [1] root  [2] now  [3] lease_expires_at  [4] worker_id  [5] token head
--       [6] limit  [7] most scheduled jobs promoted per queue  [8..] queue names
-- Returns: the HGETALL of each claimed job, in claim order.
-- Invariants: a job is claimed only when pending with run_at <= now; within a queue
--          the order is priority desc, run_at asc, id asc (the ready zset order);
--          each claim bumps attempt and sets a token unique to this call and job;
--          jobs that are not due under this `now` (the clock went back) return to
--          the sched zset.

local now = tonumber(ARGV[2])
local limit = tonumber(ARGV[6])
local promote = tonumber(ARGV[7])
local out = {}
local none = {}
for qi = 8, #ARGV do
  if #out >= limit then
    break
  end
  local queue = ARGV[qi]
  local ready, sched = k_ready(queue), k_sched(queue)
  -- scheduled jobs that became due join the ready set first
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', ARGV[2], 'LIMIT', 0, promote)
  for _, id in ipairs(due) do
    redis.call('ZREM', sched, id)
    local f = redis.call('HMGET', k_job(id), 'state', 'priority', '_rk')
    if f[1] == 'pending' then
      redis.call('ZADD', ready, 0 - tonumber(f[2]), f[3])
    end
  end
  while #out < limit do
    local top = redis.call('ZRANGE', ready, 0, 0)
    if #top == 0 then
      break
    end
    local member = top[1]
    local id = string.sub(member, 17)
    local jk = k_job(id)
    local f = redis.call('HMGET', jk, 'state', 'run_at', 'attempt', '_rk')
    if f[1] ~= 'pending' or f[4] ~= member then
      redis.call('ZREM', ready, member) -- dangling entry
    elseif tonumber(f[2]) > now then
      redis.call('ZREM', ready, member)
      redis.call('ZADD', sched, f[2], id)
    else
      unindex(id)
      redis.call('HSET', jk, 'state', 'running', 'attempt', fmt(tonumber(f[3]) + 1),
        'started_at', ARGV[2], 'worker_id', ARGV[4], 'lease', ARGV[5] .. '.' .. (#out + 1),
        'lease_expires_at', ARGV[3])
      index(id, now, none)
      out[#out + 1] = redis.call('HGETALL', jk)
    end
  end
end
return out
