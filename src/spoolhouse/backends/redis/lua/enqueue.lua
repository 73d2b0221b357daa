-- enqueue.lua: store a batch of jobs in one atomic step (enqueue and enqueue_many).
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] deadline: server time (TIME) after which the client
--       has stopped waiting for the reply, in whole microseconds (decimal, no leading
--       zero)  [4] number of jobs n
--       then n times: id, m, and m values forming field/value pairs of the job hash
--       (absent field = None; includes _rk)
-- Returns: 'late' when the server's clock is past the deadline (nothing stored: the
--          client already reported a timeout, or its idea of the server clock is
--          stale), else one entry per job, in order: 0 when the job was stored as
--          given, else the HGETALL of the stored job returned instead (nothing
--          stored for that job): the job already stored under its id, or the job
--          holding its unique key (see put_job in _lib.lua).
-- Invariants: at most one live job per unique key, also between jobs of the batch;
--          a succeeded job holds its key until its expires_at; an id already stored
--          is left as it is; the whole batch is one script, so it is stored all or
--          none; a timed-out enqueue that Redis gets to run late stores nothing; idle
--          workers of each touched queue are woken.

if past(ARGV[3]) then
  return 'late'
end
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local out = {}
local wake = {}
local i = 5
for j = 1, n do
  local last = i + 1 + tonumber(ARGV[i + 1])
  out[j] = put_job(ARGV[i], i + 2, last, now, wake, ARGV[2])
  i = last + 1
end
wake_up(wake)
return out
