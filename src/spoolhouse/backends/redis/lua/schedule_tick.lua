-- schedule_tick.lua: enqueue the run of a periodic schedule for one tick, at most once.
--
-- KEYS: queues (declared for routing; the fixed keys are built from the root, see keys.py)
-- ARGV: [1] root  [2] now  [3] schedule name  [4] tick  [5] job id  [6] m, then m
--       values forming field/value pairs of the job hash (absent field = None;
--       includes _rk)
-- Returns: -1 when the tick was already recorded (nothing changed); else 0 when the
--          job was stored as given, or the HGETALL of the stored job returned
--          instead (its id was stored, or another job holds its unique key).
-- Invariants: ticks[name] only moves forward, except when the recorded tick is later
--          than now (the clock was set back): then any tick replaces it; the tick
--          is recorded and the job enqueued (with the rules of enqueue.lua, by
--          put_job) in one step, so of many schedulers exactly one enqueues.

local now = tonumber(ARGV[2])
local tick = tonumber(ARGV[4])
local last = redis.call('HGET', K_TICKS, ARGV[3])
if last then
  local recorded = tonumber(last)
  if tick <= recorded and recorded <= now then
    return -1
  end
end
redis.call('HSET', K_TICKS, ARGV[3], ARGV[4])
local wake = {}
local stored = put_job(ARGV[5], 7, 6 + tonumber(ARGV[6]), now, wake, ARGV[2])
wake_up(wake)
return stored
