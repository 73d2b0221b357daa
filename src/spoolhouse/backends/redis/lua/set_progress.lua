-- set_progress.lua: record the progress JSON of a running job.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] job id  [3] token  [4] progress (JSON text)
-- Returns: 'held', 'abort' (held, cancel requested) or 'lost' (nothing written).
-- Invariants: only the holder of the current lease writes.

local ok, abort = held(ARGV[2], ARGV[3])
if not ok then
  return 'lost'
end
redis.call('HSET', k_job(ARGV[2]), 'progress', ARGV[4])
return abort and 'abort' or 'held'
