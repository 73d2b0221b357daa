-- claim.lua: move up to `limit` due jobs to running, serving queues in the order given.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now, or 'T' followed by the client's clock offset (server clock
--       minus client clock, seconds): now is then the server's TIME minus the offset
--       (a claim sent ahead, behind a BLPOP, see RedisBackend.wait)  [3] lease_expires_at,
--       or with a 'T' now the lease in seconds  [4] worker_id  [5] token head
--       [6] limit  [7] most scheduled jobs promoted per queue  [8] per-task limits as
--       JSON, {"<task>": {"c": concurrency, "r": rate, "p": per}} (c and r optional),
--       or '' for none  [9] most blocked jobs skipped per queue  [10] page size of
--       the ready-set scan  [11..] queue names
-- Returns: the HGETALL of each claimed job, in claim order.
-- Invariants: a job is claimed only when pending with run_at <= now; within a queue
--          the order is priority desc, run_at asc, id asc (the ready zset order);
--          each claim bumps attempt and sets a token unique to this call and job;
--          jobs that are not due under this `now` (the clock went back) return to
--          the sched zset; a claim records the start in started:<task> (score now,
--          replacing the job's earlier start) when [8] gives the task a rate, and
--          only then: the rate of a task counts the starts of the claims that passed
--          it (workers pass the limits of every task they know); a task with limits
--          never gets more than min(c - busy[task], r - starts within (now - p, +inf)) jobs;
--          jobs of a task at its limit stay where they are in the ready set and
--          the scan goes on behind them, past up to [9] of them per queue.

local now_s, lease_s = ARGV[2], ARGV[3]
if string.sub(now_s, 1, 1) == 'T' then
  local clock = redis.call('TIME')
  local now_t = tonumber(clock[1]) + tonumber(clock[2]) / 1000000 - tonumber(string.sub(now_s, 2))
  now_s, lease_s = fmt(now_t), fmt(now_t + tonumber(lease_s))
end
local now = tonumber(now_s)
local limit = tonumber(ARGV[6])
local promote = tonumber(ARGV[7])
local limits = {}
if ARGV[8] ~= '' then
  limits = cjson.decode(ARGV[8])
end
local skip_max = tonumber(ARGV[9])
local page = tonumber(ARGV[10])
local out = {}

-- allowance[task]: jobs of the task this call may still start; false = unlimited
local allowance = {}
local function allowed(task)
  local left = allowance[task]
  if left ~= nil then
    return left
  end
  local rule = limits[task]
  left = false
  if type(rule) == 'table' then
    if type(rule.c) == 'number' then
      left = rule.c - tonumber(redis.call('HGET', K_BUSY, task) or '0')
    end
    if type(rule.r) == 'number' then
      local sk = k_started(task)
      -- starts at or before now - per are outside every window this `now` asks about
      redis.call('ZREMRANGEBYSCORE', sk, '-inf', fmt(now - rule.p))
      local recent = rule.r - redis.call('ZCARD', sk)
      if left == false or recent < left then
        left = recent
      end
    end
    if left ~= false and left < 0 then
      left = 0
    end
  end
  allowance[task] = left
  return left
end

for qi = 11, #ARGV do
  if #out >= limit then
    break
  end
  local queue = ARGV[qi]
  local ready, sched = k_ready(queue), k_sched(queue)
  -- scheduled jobs that became due join the ready set first
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now_s, 'LIMIT', 0, promote)
  for _, id in ipairs(due) do
    redis.call('ZREM', sched, id)
    local f = redis.call('HMGET', k_job(id), 'state', 'priority', '_rk')
    if f[1] == 'pending' then
      redis.call('ZADD', ready, ready_score(f[2]), f[3])
    end
  end
  -- Every entry looked at leaves the ready set (claimed, dangling or not due) except
  -- the blocked ones, which stay in front: the next page starts after them.
  local skipped = 0
  local full = false -- a job past the skip bound was blocked: this queue is done
  while #out < limit and not full do
    local size = page
    if skipped == 0 and limit - #out < page then
      size = limit - #out
    end
    local members = redis.call('ZRANGE', ready, skipped, skipped + size - 1)
    if #members == 0 then
      break
    end
    for _, member in ipairs(members) do
      if #out >= limit or full then
        break
      end
      local id = string.sub(member, 17)
      local jk = k_job(id)
      -- the INDEXED fields (see _lib.lua), then attempt at [10]
      local f = redis.call('HMGET', jk, 'state', 'queue', 'key', 'run_at', 'priority', '_rk',
        'lease_expires_at', 'expires_at', 'task', 'attempt')
      if f[1] ~= 'pending' or f[6] ~= member then
        redis.call('ZREM', ready, member) -- dangling entry
      elseif tonumber(f[4]) > now then
        redis.call('ZREM', ready, member)
        redis.call('ZADD', sched, f[4], id)
      else
        local left = allowed(f[9])
        if left == 0 then
          if skipped >= skip_max then
            full = true
          else
            skipped = skipped + 1
          end
        else
          if left then
            allowance[f[9]] = left - 1
          end
          redis.call('HSET', jk, 'state', 'running', 'attempt', fmt(tonumber(f[10] or '0') + 1),
            'started_at', now_s, 'worker_id', ARGV[4], 'lease', ARGV[5] .. '.' .. (#out + 1),
            'lease_expires_at', lease_s)
          start_running(id, f, lease_s)
          local rule = limits[f[9]]
          if type(rule) == 'table' and type(rule.r) == 'number' then
            redis.call('ZADD', k_started(f[9]), now_s, id)
          end
          out[#out + 1] = redis.call('HGETALL', jk)
        end
      end
    end
  end
end
return out
