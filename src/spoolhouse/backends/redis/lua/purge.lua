-- purge.lua: delete a batch of jobs of one final state and one queue, optionally
-- finished before a time.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] state (final)  [3] lexicographic start ('-' or '(' .. last id)
--       [4] batch size  [5] queue  [6] finished before, or '' for any
-- Returns: {deleted, next start or '' when the index jobs:<state>:<queue> was scanned
--          to the end}.
-- Invariants: only jobs in a final state are deleted; a deleted job leaves no
--          index entry.

local state = ARGV[2]
if state ~= 'succeeded' and state ~= 'failed' and state ~= 'cancelled' then
  return {0, ''}
end
local batch = tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYLEX', k_jobs(state .. ':' .. ARGV[5]), ARGV[3], '+', 'LIMIT', 0, batch)
local before = nil
if ARGV[6] ~= '' then
  before = tonumber(ARGV[6])
end
local n = 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k_job(id), 'state', 'queue', 'finished_at')
  if f[1] == state and f[2] == ARGV[5] and (before == nil or tonumber(f[3] or '0') < before) then
    delete_job(id)
    n = n + 1
  end
end
local next_start = ''
if #ids == batch then
  next_start = '(' .. ids[#ids]
end
return {n, next_start}
