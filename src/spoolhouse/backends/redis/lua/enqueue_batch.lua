-- enqueue_batch.lua: store pending jobs without a unique key that share every field
-- but id and _d, in one atomic step (enqueue_batch; a single job takes enqueue_one.lua).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] deadline, as in enqueue.lua  [4] task  [5] queue
--       [6] run_at  [7] the start of _rk shared by the jobs (16 hex digits of run_at,
--       see codec.order_key): a job's _rk is it followed by the id  [8] max_attempts
--       [9] t, then t values: field/value pairs of the other fields the jobs share
--       (never state, key or a packed field; priority, when set, is read from them)
--       then, per job, two values: id, _d
-- Returns: 'late' when the server's clock is past the deadline (nothing stored); else
--          how many of its jobs were already stored (those were left as they are).
-- Invariants: the hash of each job stored is the one enqueue.lua stores for it (the
--          same fields and values: state pending, _rk = ARGV[7] .. id), with the same
--          index entries (jobs:pending:<queue>, then ready:<queue> when run_at is due
--          at now, else sched:<queue>; queue in queues) and wake-up tokens (one per
--          job stored, up to WAKE_MAX); an id already stored is left as it is; all or
--          nothing, and nothing when late, as in enqueue.lua.

if past(ARGV[3]) then
  return 'late'
end
local queue, run_at, rk = ARGV[5], ARGV[6], ARGV[7]
local last = 9 + tonumber(ARGV[9])
local score = '0'
for p = 10, last, 2 do
  if ARGV[p] == 'priority' then
    score = ready_score(ARGV[p + 1])
  end
end
local due = run_at == ARGV[2] or tonumber(run_at) <= tonumber(ARGV[2])
local pending = k_jobs('pending:' .. queue)

-- the hashes one by one, the index entries in chunks (unpack takes at most
-- about 8,000 values)
local BATCH_CHUNK = 1000
local kept = 0
local ids, entries = {}, {}
local n = 0
for p = last + 1, #ARGV, 2 do
  local id = ARGV[p]
  local jk = k_job(id)
  if redis.call('EXISTS', jk) == 1 then
    kept = kept + 1
  else
    local member = rk .. id
    redis.call('HSET', jk, '_d', ARGV[p + 1], 'task', ARGV[4], 'queue', queue, 'state', 'pending',
      'run_at', run_at, 'max_attempts', ARGV[8], '_rk', member, unpack(ARGV, 10, last))
    n = n + 1
    ids[2 * n - 1], ids[2 * n] = '0', id
    if due then
      entries[2 * n - 1], entries[2 * n] = score, member
    else
      entries[2 * n - 1], entries[2 * n] = run_at, id
    end
  end
end
if n > 0 then
  redis.call('SADD', K_QUEUES, queue)
  local target = due and k_ready(queue) or k_sched(queue)
  for first = 1, 2 * n, 2 * BATCH_CHUNK do
    local stop = math.min(first + 2 * BATCH_CHUNK - 1, 2 * n)
    redis.call('ZADD', pending, unpack(ids, first, stop))
    redis.call('ZADD', target, unpack(entries, first, stop))
  end
  wake_up({[queue] = n})
end
return kept
