-- enqueue_one.lua: store one pending job without a unique key (a keyless single
-- enqueue: spool()), the common case, with as little as the server can do.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] deadline, as in enqueue.lua  [3] id  [4] _d  [5] task  [6] queue
--       [7] run_at  [8] max_attempts  [9] _rk (16 hex digits of run_at, then the id, see
--       codec.order_key)  [10] the job's score in ready:<queue> when run_at is due at the
--       client's now (the negated priority), '' when it is not  [11..] field/value pairs
--       of the job's other fields (never state, key or a packed field)
-- Returns: 'late' when the server's clock is past the deadline (nothing stored); 0
--          when the job was stored as given; else the HGETALL of the job already
--          stored under its id (nothing changed).
-- Invariants: the hash and index entries are those enqueue_batch.lua (and enqueue.lua)
--          store for the job: the same fields and values (state pending), in
--          jobs:pending:<queue>, then ready:<queue> (score ARGV[10], member _rk) when
--          due, else sched:<queue> (score run_at, member id); queue in queues; one
--          wake-up token unless the list holds WAKE_MAX. What enqueue_batch.lua works
--          out from its ARGV (the due test against now, the score from the priority,
--          _rk from its start and the id) the client sends worked out: two ARGV
--          strings fewer, no loop over the pairs.

if past(ARGV[2]) then
  return 'late'
end
local id = ARGV[3]
local jk = k_job(id)
if redis.call('EXISTS', jk) == 1 then
  return redis.call('HGETALL', jk)
end
local queue, member, score = ARGV[6], ARGV[9], ARGV[10]
if #ARGV == 12 then -- one pair (result_ttl, most jobs): no unpack, a library call
  redis.call('HSET', jk, '_d', ARGV[4], 'task', ARGV[5], 'queue', queue, 'state', 'pending',
    'run_at', ARGV[7], 'max_attempts', ARGV[8], '_rk', member, ARGV[11], ARGV[12])
else
  redis.call('HSET', jk, '_d', ARGV[4], 'task', ARGV[5], 'queue', queue, 'state', 'pending',
    'run_at', ARGV[7], 'max_attempts', ARGV[8], '_rk', member, unpack(ARGV, 11))
end
redis.call('SADD', K_QUEUES, queue)
redis.call('ZADD', k_jobs('pending:' .. queue), '0', id)
if score ~= '' then
  redis.call('ZADD', k_ready(queue), score, member)
else
  redis.call('ZADD', k_sched(queue), ARGV[7], id)
end
local wk = k_wake(queue)
if redis.call('LLEN', wk) < WAKE_MAX then
  redis.call('LPUSH', wk, '1')
end
return 0
