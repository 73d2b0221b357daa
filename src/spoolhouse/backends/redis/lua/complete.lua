-- complete.lua: running -> succeeded, for a batch of jobs (complete and complete_many).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] stats minute of now (floor(now / 60)), or '' to count
--       nothing  [4] number of jobs n, then n times five values: job id, token, '1' when
--       a result is given, result bytes, expires_at or '' for none
-- Returns: one entry per job, in order: 1, or 0 when its token is not current (that
--          job is left as it was).
-- Invariants: fencing by token, job by job; the job holds its unique key until its
--          expires_at (for ever without one): its uniq entry moves to uniq_done (see
--          keep_key in _lib.lua); it leaves the task's running count and enters the
--          expiring zset when it has an expiry; each job completed is counted as one
--          success in the minute [3]; the batch is one script, so it is applied whole.

local out = {}
local i = 5
for j = 1, tonumber(ARGV[4]) do
  local id = ARGV[i]
  local f = holding(id, ARGV[i + 1])
  if f then
    local set = {'state', 'succeeded', 'finished_at', ARGV[2]}
    local clear = {'lease', 'lease_expires_at'}
    if ARGV[i + 2] == '1' then
      set[#set + 1], set[#set + 2] = 'result', ARGV[i + 3]
    else
      clear[#clear + 1] = 'result'
    end
    local expires_at = ARGV[i + 4]
    if expires_at ~= '' then
      set[#set + 1], set[#set + 2] = 'expires_at', expires_at
    else
      clear[#clear + 1] = 'expires_at'
    end
    local jk = k_job(id)
    redis.call('HSET', jk, unpack(set))
    redis.call('HDEL', jk, unpack(clear))
    stop_running(id, f, 'succeeded', expires_at)
    tally(ARGV[3], 's')
    out[j] = 1
  else
    out[j] = 0
  end
  i = i + 5
end
return out
