-- _lib.lua: helpers shared by every script; prepended after the generated key prelude.
--
-- KEYS: ids, uniq, counts, running, expiring (the fixed keys, named K_* by the prelude)
-- ARGV: [1] root of every key (ROOT in the prelude); the rest belongs to each script
--
-- Invariants kept by index() and unindex(), which every transition calls around
-- its change of a job hash (unindex before, index after):
--   * every job is in `ids`, `state:<state>` and `queue:<queue>` and counted once
--     in `counts` under "<state>:<queue>" (entries that reach 0 are removed);
--   * a pending job is in `pending:<queue>` and in exactly one of `ready:<queue>`
--     (member _rk, found due) and `sched:<queue>` (not yet found due);
--   * a running job with a lease expiry is in `running`;
--   * a final job with an expiry is in `expiring`;
--   * `uniq[key] == id` exactly while the job holding `key` is live.
--
-- Numbers computed here are written with %.17g so they read back as the very
-- same double in Python.

local function fmt(x)
  return string.format('%.17g', x)
end

local INDEXED = {'state', 'queue', 'key', 'run_at', 'priority', '_rk', 'lease_expires_at', 'expires_at'}

local function count(state, queue, by)
  local field = state .. ':' .. queue
  if redis.call('HINCRBY', K_COUNTS, field, by) <= 0 then
    redis.call('HDEL', K_COUNTS, field)
  end
end

local function unindex(id)
  local f = redis.call('HMGET', k_job(id), unpack(INDEXED))
  local state, queue, key = f[1], f[2], f[3]
  if not state then
    return
  end
  redis.call('ZREM', K_IDS, id)
  redis.call('ZREM', k_state(state), id)
  redis.call('ZREM', k_queue(queue), id)
  count(state, queue, -1)
  if key and redis.call('HGET', K_UNIQ, key) == id then
    redis.call('HDEL', K_UNIQ, key)
  end
  if state == 'pending' then
    redis.call('ZREM', k_pending(queue), id)
    redis.call('ZREM', k_sched(queue), id)
    if f[6] then
      redis.call('ZREM', k_ready(queue), f[6])
    end
  elseif state == 'running' then
    redis.call('ZREM', K_RUNNING, id)
  else
    redis.call('ZREM', K_EXPIRING, id)
  end
end

-- `wake` collects, per queue, how many pending jobs were indexed (see wake_up).
local function index(id, now, wake)
  local f = redis.call('HMGET', k_job(id), unpack(INDEXED))
  local state, queue, key = f[1], f[2], f[3]
  redis.call('ZADD', K_IDS, 0, id)
  redis.call('ZADD', k_state(state), 0, id)
  redis.call('ZADD', k_queue(queue), 0, id)
  count(state, queue, 1)
  if state == 'pending' then
    if key then
      redis.call('HSET', K_UNIQ, key, id)
    end
    redis.call('ZADD', k_pending(queue), f[4], id)
    if tonumber(f[4]) <= now then
      redis.call('ZADD', k_ready(queue), 0 - tonumber(f[5]), f[6])
    else
      redis.call('ZADD', k_sched(queue), f[4], id)
    end
    wake[queue] = (wake[queue] or 0) + 1
  elseif state == 'running' then
    if key then
      redis.call('HSET', K_UNIQ, key, id)
    end
    if f[7] then
      redis.call('ZADD', K_RUNNING, f[7], id)
    end
  elseif f[8] then
    redis.call('ZADD', K_EXPIRING, f[8], id)
  end
end

-- One token per pending job made (up to WAKE_MAX) on each queue's wake list:
-- every idle worker BLPOPs these, so one enqueue wakes one worker, a batch several.
local function wake_up(wake)
  for queue, n in pairs(wake) do
    if n > WAKE_MAX then
      n = WAKE_MAX
    end
    local tokens = {}
    for i = 1, n do
      tokens[i] = '1'
    end
    local wk = k_wake(queue)
    redis.call('LPUSH', wk, unpack(tokens))
    redis.call('LTRIM', wk, 0, WAKE_MAX - 1)
  end
end

-- Is the job running under `token`? Second result: was an abort requested?
local function held(id, token)
  local f = redis.call('HMGET', k_job(id), 'state', 'lease', 'abort_requested')
  if f[1] == 'running' and f[2] == token then
    return true, f[3] == '1'
  end
  return false, false
end

-- The worker holding a running job died: back to pending (due now), or to failed
-- when attempts or losses are used up. `now_s` is the time as sent by the client.
local function rescue_one(id, now_s, max_lost, err, rk_head, wake)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'attempt', 'max_attempts', 'lost')
  local lost = tonumber(f[3] or '0') + 1
  unindex(id)
  if tonumber(f[1]) >= tonumber(f[2]) or lost >= max_lost then
    redis.call('HSET', jk, 'state', 'failed', 'lost', fmt(lost), 'error', err, 'finished_at', now_s)
    redis.call('HDEL', jk, 'lease', 'lease_expires_at')
  else
    redis.call('HSET', jk, 'state', 'pending', 'lost', fmt(lost), 'error', err,
      'run_at', now_s, '_rk', rk_head .. id)
    redis.call('HDEL', jk, 'lease', 'lease_expires_at', 'worker_id')
  end
  index(id, tonumber(now_s), wake)
  return redis.call('HGETALL', jk)
end

-- Remove a job and every index entry of it.
local function delete_job(id)
  unindex(id)
  redis.call('DEL', k_job(id))
end
