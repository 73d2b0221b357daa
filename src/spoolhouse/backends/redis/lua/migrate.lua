-- migrate.lua: move a batch of jobs of a schema 1 store to the schema 2 index.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py;
--       `ids` is the legacy index of every job, `counts` the legacy hash of counts)
-- ARGV: [1] root  [2] batch size
-- Returns: how many ids were taken from `ids` (the store is on schema 2 once neither
--          `ids` nor `counts` exists).
-- Invariants: the queues named by the fields ("<state>:<queue>") of a legacy `counts`
--          join `queues` and `counts` goes (a queue with no job has no field, and no
--          job to list); each job taken from `ids` is added to jobs:<state>:<queue> of
--          its current state and queue and its queue to `queues` (ids whose job is
--          gone are dropped), so a store half migrated, and worked on by schema 2
--          scripts meanwhile, ends right; the call that leaves `ids` empty also
--          deletes the schema 1 sets state:<state>, queue:<queue> and pending:<queue>
--          (of the queues in `queues`: a queue never given a job has no key).

if redis.call('EXISTS', K_COUNTS) == 1 then
  for _, field in ipairs(redis.call('HKEYS', K_COUNTS)) do
    redis.call('SADD', K_QUEUES, string.sub(field, string.find(field, ':', 1, true) + 1))
  end
  redis.call('DEL', K_COUNTS)
end
local batch = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', K_IDS, '0', batch - 1)
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_job(id), 'state', 'queue')
  if f[1] and f[2] then
    redis.call('ZADD', k_jobs(f[1] .. ':' .. f[2]), '0', id)
    redis.call('SADD', K_QUEUES, f[2])
  end
end
if #ids > 0 then
  redis.call('ZREM', K_IDS, unpack(ids))
  if redis.call('EXISTS', K_IDS) == 0 then
    local legacy = {}
    for _, state in ipairs({'pending', 'running', 'succeeded', 'failed', 'cancelled'}) do
      legacy[#legacy + 1] = ROOT .. 'state:' .. state
    end
    for _, queue in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
      legacy[#legacy + 1] = ROOT .. 'queue:' .. queue
      legacy[#legacy + 1] = ROOT .. 'pending:' .. queue
    end
    redis.call('DEL', unpack(legacy))
  end
end
return #ids
