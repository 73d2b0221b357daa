-- _lib.lua: helpers shared by every script; prepended after the generated key prelude.
--
-- KEYS: queues (declared for routing); the fixed keys K_* (ids, uniq, queues, counts,
--       running, expiring, busy, ticks, uniq_done, stats, stat_minutes) are built from
--       the root by the prelude
-- ARGV: [1] root of every key (ROOT in the prelude); the rest belongs to each script
--
-- Invariants kept by index() and unindex(), which every transition calls around
-- its change of a job hash (unindex before, index after):
--   * every job is in `jobs:<state>:<queue>` (its size is the count of `counts()`),
--     and its queue is in `queues` (put_job adds it; a job never changes queue);
--   * a pending job is in exactly one of `ready:<queue>` (member _rk, found due) and
--     `sched:<queue>` (not yet found due);
--   * a running job with a lease expiry is in `running`;
--   * a final job with an expiry is in `expiring`;
--   * `busy[task]` is the number of running jobs of the task (entries at 0 removed);
--   * `uniq[key] == id` exactly while the job holding `key` is live;
--   * when a job with `key` succeeds, `uniq_done[key]` becomes its id unless it names
--     a succeeded job that expires later (None = never): the entry names the succeeded
--     job that holds the key longest (key_holder checks its expires_at against now);
--     delete_job removes it.
-- Outside index/unindex: `started:<task>` holds the latest start of every job of the
-- task claimed under a rate limit of the task (claim.lua writes and trims it,
-- delete_job removes the job);
-- `bykey:<key>` holds every stored job with unique key `key`, whatever its state
-- (put_job adds it, delete_job removes it; no transition changes a job's key);
-- `stats` counts outcomes per minute and `stat_minutes` lists the minutes counted
-- (tally adds, prune.lua trims).
--
-- Numbers computed here are written with %.17g so they read back as the very
-- same double in Python. Constants given to redis.call are strings ('0', not 0): Redis
-- formats a Lua number with printf on every call.

-- Has the server's clock (TIME) passed `deadline`, whole microseconds as decimal
-- text without a leading zero? Compared as text, no number parsing: the longer is
-- larger, else the order of the digits. The enqueue scripts refuse to run past the
-- moment their client stopped waiting. (string.rep only for the one call in ten whose
-- microseconds have fewer than 6 digits: a call of a library function costs about
-- 1,200 instructions.)
local function past(deadline)
  local clock = redis.call('TIME')
  local micros = clock[2]
  if #micros < 6 then
    micros = string.rep('0', 6 - #micros) .. micros
  end
  local server = clock[1] .. micros
  return #server > #deadline or (#server == #deadline and server > deadline)
end

local function fmt(x)
  return string.format('%.17g', x)
end

-- The INDEXED fields, in this order wherever a list `f` of them is passed: state, queue,
-- key, run_at, priority, _rk, lease_expires_at, expires_at, task. Written out in each
-- HMGET rather than kept in a table: a table constructor at the top level would run on
-- every call of every script (about 3,000 instructions each).

-- Add `by` to a counter hash field; a field that reaches 0 (or less) is removed.
local function bump(hash, field, by)
  if redis.call('HINCRBY', hash, field, by) <= 0 then
    redis.call('HDEL', hash, field)
  end
end

-- The ready-set score of a job of `priority` (decimal text; nil or false for 0): its negation,
-- as text.
local function ready_score(priority)
  if not priority or priority == '0' then
    return '0'
  end
  return fmt(0 - tonumber(priority))
end

local function unindex(id)
  local f = redis.call('HMGET', k_job(id), 'state', 'queue', 'key', 'run_at', 'priority', '_rk',
    'lease_expires_at', 'expires_at', 'task')
  local state, queue, key = f[1], f[2], f[3]
  if not state then
    return
  end
  redis.call('ZREM', k_jobs(state .. ':' .. queue), id)
  if key and redis.call('HGET', K_UNIQ, key) == id then
    redis.call('HDEL', K_UNIQ, key)
  end
  if state == 'pending' then
    redis.call('ZREM', k_sched(queue), id)
    if f[6] then
      redis.call('ZREM', k_ready(queue), f[6])
    end
  elseif state == 'running' then
    redis.call('ZREM', K_RUNNING, id)
    bump(K_BUSY, f[9], '-1')
  else
    redis.call('ZREM', K_EXPIRING, id)
  end
end

-- The job `id`, just succeeded with `expires_at` (nil = never), keeps holding unique
-- `key` through uniq_done unless the succeeded job named there expires later.
local function keep_key(key, id, expires_at)
  local other = redis.call('HGET', K_UNIQ_DONE, key)
  if other and other ~= id then
    local f = redis.call('HMGET', k_job(other), 'state', 'expires_at')
    if f[1] == 'succeeded' and (not f[2] or (expires_at and tonumber(f[2]) > tonumber(expires_at))) then
      return
    end
  end
  redis.call('HSET', K_UNIQ_DONE, key, id)
end

-- The two transitions of every job that runs, done as unindex + index would, but
-- touching only the entries that change (a live job keeps its uniq entry). `f` holds the
-- INDEXED fields before the change.

-- pending -> running, for a job found in its ready set (so in no sched set) that now
-- runs under a lease expiring at `lease_expires_at`.
local function start_running(id, f, lease_expires_at)
  local queue = f[2]
  redis.call('ZREM', k_jobs('pending:' .. queue), id)
  redis.call('ZADD', k_jobs('running:' .. queue), '0', id)
  redis.call('ZREM', k_ready(queue), f[6])
  redis.call('ZADD', K_RUNNING, lease_expires_at, id)
  bump(K_BUSY, f[9], '1')
end

-- running -> `state` (final), expiring at `expires_at` ('' for never).
local function stop_running(id, f, state, expires_at)
  local queue, key = f[2], f[3]
  redis.call('ZREM', k_jobs('running:' .. queue), id)
  redis.call('ZADD', k_jobs(state .. ':' .. queue), '0', id)
  redis.call('ZREM', K_RUNNING, id)
  bump(K_BUSY, f[9], '-1')
  if key then
    if redis.call('HGET', K_UNIQ, key) == id then
      redis.call('HDEL', K_UNIQ, key)
    end
    if state == 'succeeded' then
      keep_key(key, id, expires_at ~= '' and expires_at or nil)
    end
  end
  if expires_at ~= '' then
    redis.call('ZADD', K_EXPIRING, expires_at, id)
  end
end

-- `wake` collects, per queue, how many pending jobs were indexed (see wake_up). `f`,
-- when given, holds the INDEXED fields of the job as stored (in INDEXED order, nil
-- for an absent field), saving their read; `now_s`, when given, is `now` as the
-- client wrote it: a run_at written the same is due without reading the number.
local function index(id, now, wake, f, now_s)
  f = f or redis.call('HMGET', k_job(id), 'state', 'queue', 'key', 'run_at', 'priority', '_rk',
    'lease_expires_at', 'expires_at', 'task')
  local state, queue, key = f[1], f[2], f[3]
  redis.call('ZADD', k_jobs(state .. ':' .. queue), '0', id)
  if key and (state == 'pending' or state == 'running') then
    redis.call('HSET', K_UNIQ, key, id)
  elseif key and state == 'succeeded' then
    keep_key(key, id, f[8])
  end
  if state == 'pending' then
    if f[4] == now_s or tonumber(f[4]) <= now then
      redis.call('ZADD', k_ready(queue), ready_score(f[5]), f[6])
    else
      redis.call('ZADD', k_sched(queue), f[4], id)
    end
    wake[queue] = (wake[queue] or 0) + 1
  elseif state == 'running' then
    if f[7] then
      redis.call('ZADD', K_RUNNING, f[7], id)
    end
    bump(K_BUSY, f[9], '1')
  elseif f[8] then
    redis.call('ZADD', K_EXPIRING, f[8], id)
  end
end

-- One token per pending job made on each queue's wake list, as long as the list stays
-- at most WAKE_MAX long: every idle worker BLPOPs these, so one enqueue wakes one
-- worker, a batch several. A full list (no worker took a token) costs one LLEN.
local function wake_up(wake)
  for queue, n in pairs(wake) do
    local wk = k_wake(queue)
    local room = WAKE_MAX - redis.call('LLEN', wk)
    if n > room then
      n = room
    end
    if n == 1 then
      redis.call('LPUSH', wk, '1')
    elseif n > 1 then
      local tokens = {}
      for i = 1, n do
        tokens[i] = '1'
      end
      redis.call('LPUSH', wk, unpack(tokens))
    end
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

-- The INDEXED fields of the job `id` (then its lease at [10]) when it is running under
-- `token`, else nil.
local function holding(id, token)
  local f = redis.call('HMGET', k_job(id), 'state', 'queue', 'key', 'run_at', 'priority', '_rk',
    'lease_expires_at', 'expires_at', 'task', 'lease')
  if f[1] == 'running' and f[10] == token then
    return f
  end
  return nil
end

-- Set or clear (`value` = '') an optional field of a job hash.
local function set_or_clear(jk, field, value)
  if value ~= '' then
    redis.call('HSET', jk, field, value)
  else
    redis.call('HDEL', jk, field)
  end
end

-- Count one outcome in `minute` (floor(now / 60) as decimal text, computed by the
-- client; '' = not counted): 's' succeeded, 'f' failed, 'r' retried. A field already
-- counted has its minute in stat_minutes (prune.lua drops both together).
local function tally(minute, outcome)
  if minute == '' then
    return
  end
  if redis.call('HINCRBY', K_STATS, minute .. ':' .. outcome, '1') == 1 then
    redis.call('ZADD', K_STAT_MINUTES, minute, minute)
  end
end

-- running -> a final state with an error (fail: 'failed', abort: 'cancelled');
-- `expires_at` is '' for none. The caller checked the lease.
local function finish(id, state, now_s, err, expires_at)
  local jk = k_job(id)
  unindex(id)
  redis.call('HSET', jk, 'state', state, 'error', err, 'finished_at', now_s)
  set_or_clear(jk, 'expires_at', expires_at)
  redis.call('HDEL', jk, 'lease', 'lease_expires_at')
  index(id, tonumber(now_s), {})
end

-- The worker holding a running job died: back to pending, or to failed when attempts
-- or losses are used up (expiring at `expires_at`, '' for never). A pending job keeps
-- its run_at (and _rk): it was due when claimed, so it is due again at once and keeps
-- its place ahead of younger jobs. `now_s` is the time as sent by the client, `minute`
-- its stats minute (a job that fails is counted there, see tally).
local function rescue_one(id, now_s, minute, max_lost, err, expires_at, wake)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'attempt', 'max_attempts', 'lost')
  local lost = tonumber(f[3] or '0') + 1
  unindex(id)
  if tonumber(f[1] or '0') >= tonumber(f[2]) or lost >= max_lost then
    redis.call('HSET', jk, 'state', 'failed', 'lost', fmt(lost), 'error', err, 'finished_at', now_s)
    set_or_clear(jk, 'expires_at', expires_at)
    redis.call('HDEL', jk, 'lease', 'lease_expires_at')
    tally(minute, 'f')
  else
    redis.call('HSET', jk, 'state', 'pending', 'lost', fmt(lost), 'error', err)
    redis.call('HDEL', jk, 'lease', 'lease_expires_at', 'worker_id')
  end
  index(id, tonumber(now_s), wake)
  return redis.call('HGETALL', jk)
end

-- Remove a job and every index entry of it (its unique key, its entry in
-- bykey:<key> and its start included).
local function delete_job(id)
  local jk = k_job(id)
  local f = redis.call('HMGET', jk, 'key', 'task')
  unindex(id)
  if f[1] then
    if redis.call('HGET', K_UNIQ_DONE, f[1]) == id then
      redis.call('HDEL', K_UNIQ_DONE, f[1])
    end
    redis.call('ZREM', k_bykey(f[1]), id)
  end
  if f[2] then
    redis.call('ZREM', k_started(f[2]), id)
  end
  redis.call('DEL', jk)
end

-- The job holding unique `key` under `now`, as its HGETALL, or nil when the key is
-- free: the live job with the key, else the succeeded one with no expires_at or one
-- later than now. An entry naming anything else (expired, dangling) is ignored.
local function key_holder(key, now)
  local live = redis.call('HGET', K_UNIQ, key)
  if live then
    local jk = k_job(live)
    local state = redis.call('HGET', jk, 'state')
    if state == 'pending' or state == 'running' then
      return redis.call('HGETALL', jk)
    end
  end
  local done = redis.call('HGET', K_UNIQ_DONE, key)
  if done then
    local jk = k_job(done)
    local f = redis.call('HMGET', jk, 'state', 'expires_at')
    if f[1] == 'succeeded' and (not f[2] or tonumber(f[2]) > now) then
      return redis.call('HGETALL', jk)
    end
  end
  return nil
end

-- Store one job given as field/value pairs in ARGV[first..last] (with _rk), unless
-- its id is already stored or its unique key is held. Returns 0 when stored as
-- given, else the HGETALL of the stored job returned instead (nothing changed).
-- `now_s` is `now` as the client sent it (see index).
local function put_job(id, first, last, now, wake, now_s)
  local jk = k_job(id)
  if redis.call('EXISTS', jk) == 1 then
    return redis.call('HGETALL', jk)
  end
  local f = {} -- the INDEXED fields, as index() reads them (the last pair of a name wins)
  for p = first, last, 2 do
    local name, value = ARGV[p], ARGV[p + 1]
    if name == 'state' then
      f[1] = value
    elseif name == 'queue' then
      f[2] = value
    elseif name == 'key' then
      f[3] = value
    elseif name == 'run_at' then
      f[4] = value
    elseif name == 'priority' then
      f[5] = value
    elseif name == '_rk' then
      f[6] = value
    elseif name == 'lease_expires_at' then
      f[7] = value
    elseif name == 'expires_at' then
      f[8] = value
    elseif name == 'task' then
      f[9] = value
    end
  end
  local key = f[3]
  if key then
    local holder = key_holder(key, now)
    if holder then
      return holder
    end
  end
  redis.call('HSET', jk, unpack(ARGV, first, last))
  redis.call('SADD', K_QUEUES, f[2])
  index(id, now, wake, f, now_s)
  if key then
    redis.call('ZADD', k_bykey(key), '0', id)
  end
  return 0
end
