-- The shared limiter of lead relay: one atomic step for every worker process and host.
-- Hand-written: no library (`limits` included) decides a rate, a platform-side window,
-- an in-flight cap and a shared cooldown together, atomically.
--
-- acquire(KEYS = [tat_key, cooldown_key, inflight_key, window_key, learned_key],
--         ARGV = [interval_ms, burst, concurrency, lease_ms, holder, window_ms, window_limit,
--                 learned, margin, floor, start, ceiling])
--
--   tat_key      GCRA "theoretical arrival time" (ms) of the quota scope: spaces grants
--   cooldown_key set with a PX ttl after a 429/503; while it lives nobody sends
--   inflight_key sorted set, per destination: holder -> lease expiry (ms) of requests in flight
--   window_key   sorted set, per quota scope: holder -> when its answer came back (ms), or its
--                lease expiry while it is in flight
--   learned_key  hash, per quota scope: the learned rate (`limiter_learn.lua`); read only when
--                learned = "auto", and then interval_ms, window_ms and window_limit come from
--                it (as worker.delivery.learned_rate.spacing), not from ARGV
--
-- The window is the platform's own rule ("at most N requests in any window_ms"), kept
-- where the platform keeps it: a request arrives there somewhere between our grant and
-- its answer, so a request counts against the window until window_ms after its answer.
-- That holds even when a request leaves late (a new connection, a busy host), which
-- spacing grants alone cannot promise.
--
-- Returns {0, "", now_ms} when the caller may send now (its holder is registered), else
-- {wait_ms, why} with why = "cooldown", "concurrency", "window" or "rate".
-- Time comes from redis.call('TIME'), so workers on skewed clocks agree.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local concurrency = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local window = tonumber(ARGV[6])
local window_limit = tonumber(ARGV[7])

if ARGV[8] == 'auto' then
  local rate = tonumber(redis.call('HGET', KEYS[5], 'rate') or ARGV[11])
  rate = math.min(tonumber(ARGV[12]), math.max(tonumber(ARGV[10]), rate))
  interval = math.max(1, math.floor(1000 * (1 + tonumber(ARGV[9])) / rate + 0.5))
  if rate >= 1 then
    window, window_limit = 1000, math.floor(rate)
  else
    window, window_limit = math.floor(1000 / rate + 0.5), 1
  end
end

local cooling = redis.call('PTTL', KEYS[2])
if cooling > 0 then
  return {cooling, 'cooldown'}
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= concurrency then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  return {math.max(1, math.min(25, tonumber(first[2]) - now)), 'concurrency'}
end

redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
if redis.call('ZCARD', KEYS[4]) >= window_limit then
  local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  return {math.max(1, math.min(25, tonumber(oldest[2]) + window - now)), 'window'}
end

local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local allow_at = tat + interval - burst * interval
if now < allow_at then
  return {allow_at - now, 'rate'}
end

local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
redis.call('ZADD', KEYS[3], now + lease, ARGV[5])
redis.call('PEXPIRE', KEYS[3], lease + 1000)
redis.call('ZADD', KEYS[4], now + lease, ARGV[5])
redis.call('PEXPIRE', KEYS[4], lease + window + 1000)
return {0, '', now}
