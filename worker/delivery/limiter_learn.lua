-- learn(KEYS = [learned_key],
--       ARGV = [throttled, granted_at_ms, floor, start, ceiling, decrease, recover, probe, near,
--               ttl_ms])
-- A request granted at granted_at_ms (Redis's clock, as `limiter.lua` returned it) got its
-- answer: a 429/503 when throttled = "1", any other answer else. The quota scope's learned
-- rate moves as worker.delivery.learned_rate.LearnedRate says, step for step:
--
--   learned_key  hash: rate (requests/s), throttled_at (the rate the last throttle came at;
--                0: none remembered), cut_at (ms of the last decrease; -1: never)
--
-- An answer to a request granted before the last decrease (or in its millisecond) changes
-- nothing, so one burst of 429s seen by many workers cuts the rate once. The hash lives ttl_ms past its last change:
-- a scope nobody sends to forgets what it learned and starts again from `start`.
-- Returns the rate after the step, as text (a Lua number would come back truncated).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local floor, start, ceiling = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'rate', 'throttled_at', 'cut_at')
local rate = math.min(ceiling, math.max(floor, tonumber(state[1] or start)))
local throttled_at = tonumber(state[2] or 0)
local cut_at = tonumber(state[3] or -1)

if tonumber(ARGV[2]) > cut_at then
  if ARGV[1] == '1' then
    throttled_at = rate
    rate = math.max(floor, rate * tonumber(ARGV[6]))
    cut_at = now
  else
    if rate > throttled_at then
      throttled_at = 0
    end
    local step = tonumber(ARGV[7])
    if throttled_at > 0 and rate >= tonumber(ARGV[9]) * throttled_at then
      step = tonumber(ARGV[8])
    end
    rate = math.min(ceiling, rate + step / rate)
  end
  redis.call('HSET', KEYS[1], 'rate', string.format('%.17g', rate),
    'throttled_at', string.format('%.17g', throttled_at), 'cut_at', string.format('%.0f', cut_at))
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[10]))
end
return string.format('%.17g', rate)
