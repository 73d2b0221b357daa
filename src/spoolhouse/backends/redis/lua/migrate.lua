-- migrate.lua: move a batch of jobs of a schema 1 store to the schema 2 index.
--
-- KEYS: counts (declared for routing; the fixed keys are built from the root, see keys.py;
--       `ids` is the legacy index of every job)
-- ARGV: [1] root  [2] batch size
-- Returns: how many ids were taken from `ids` (the store is on schema 2 once `ids` is
--          gone).
-- Invariants: each job taken from `ids` is added to jobs:<state>:<queue> of its
--          current state and queue (ids whose job is gone are dropped), so a store
--          half migrated, and worked on by schema 2 scripts meanwhile, ends right;
--          the call that leaves `ids` empty also deletes the schema 1 sets
--          state:<state>, queue:<queue> and pending:<queue> (the queues named in
--          counts; sets of other queues are empty, so Redis holds no key for them).

local batch = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', K_IDS, '0', batch - 1)
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_job(id), 'state', 'queue')
  if f[1] and f[2] then
    redis.call('ZADD', k_jobs(f[1] .. ':' .. f[2]), '0', id)
  end
end
if #ids > 0 then
  redis.call('ZREM', K_IDS, unpack(ids))
end
if redis.call('EXISTS', K_IDS) == 0 then
  local legacy = {}
  for _, state in ipairs({'pending', 'running', 'succeeded', 'failed', 'cancelled'}) do
    legacy[#legacy + 1] = ROOT .. 'state:' .. state
  end
  local fields = redis.call('HKEYS', K_COUNTS)
  for _, field in ipairs(fields) do
    local queue = string.sub(field, string.find(field, ':', 1, true) + 1)
    legacy[#legacy + 1] = ROOT .. 'queue:' .. queue
    legacy[#legacy + 1] = ROOT .. 'pending:' .. queue
  end
  redis.call('DEL', unpack(legacy))
end
return #ids
