-- delete.lua: delete the listed jobs that are in a final state.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2..] job ids (duplicates allowed)
-- Returns: how many jobs were deleted.
-- Invariants: only succeeded, failed and cancelled jobs are deleted (pending and running
--          ones, unknown ids and repeated ids are passed over); a deleted job leaves no
--          index entry (see delete_job in _lib.lua: ids, state, queue, expiring, counts,
--          uniq_done, bykey:<key>, started:<task>); the stats are not touched (they
--          count outcomes, not stored jobs).

local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', k_job(id), 'state')
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    delete_job(id)
    n = n + 1
  end
end
return n
