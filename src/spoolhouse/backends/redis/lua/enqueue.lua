-- enqueue.lua: store a batch of jobs in one atomic step (enqueue and enqueue_many).
--
-- KEYS: ids, uniq, counts, running, expiring (the fixed keys, see keys.py)
-- ARGV: [1] root  [2] now  [3] deadline: server time (TIME, in seconds) after which
--       the client has stopped waiting for the reply  [4] number of jobs n
--       then n times: id, m, and m values forming field/value pairs of the job hash
--       (absent field = None; includes _rk)
-- Returns: 'late' when the server's clock is past the deadline (nothing stored: the
--          client already reported a timeout, or its idea of the server clock is
--          stale), else one entry per job, in order: 0 when the job was stored as
--          given, else the HGETALL of the live job holding its unique key (nothing
--          stored for that job).
-- Invariants: at most one live job per unique key, also between jobs of the batch;
--          a job whose id is already stored replaces it (old index entries removed);
--          the whole batch is one script, so it is stored all or none; a timed-out
--          enqueue that Redis gets to run late stores nothing; idle
--          workers of each touched queue are woken.

local clock = redis.call('TIME')
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[3]) then
  return 'late'
end
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local out = {}
local wake = {}
local i = 5
for j = 1, n do
  local id = ARGV[i]
  local first = i + 2
  local last = i + 1 + tonumber(ARGV[i + 1])
  local key = nil
  for p = first, last, 2 do
    if ARGV[p] == 'key' then
      key = ARGV[p + 1]
    end
  end
  local existing = {}
  if key then
    local holder = redis.call('HGET', K_UNIQ, key)
    if holder then
      existing = redis.call('HGETALL', k_job(holder))
      if #existing == 0 then
        redis.call('HDEL', K_UNIQ, key) -- dangling entry: the key is free
      end
    end
  end
  if #existing > 0 then
    out[j] = existing
  else
    local jk = k_job(id)
    if redis.call('EXISTS', jk) == 1 then
      delete_job(id)
    end
    redis.call('HSET', jk, unpack(ARGV, first, last))
    index(id, now, wake)
    out[j] = 0
  end
  i = last + 1
end
wake_up(wake)
return out
