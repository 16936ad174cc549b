-- The shared limiter of lead relay: one atomic step for every worker process and host.
-- Hand-written: no library (`limits` included) decides a rate, a platform-side window,
-- an in-flight cap and a shared cooldown together, atomically.
--
-- acquire(KEYS = [tat_key, cooldown_key, inflight_key, window_key],
--         ARGV = [interval_ms, burst, concurrency, lease_ms, holder, window_ms, window_limit])
--
--   tat_key      GCRA "theoretical arrival time" (ms) of the quota scope: spaces grants
--   cooldown_key set with a PX ttl after a 429/503; while it lives nobody sends
--   inflight_key sorted set, per destination: holder -> lease expiry (ms) of requests in flight
--   window_key   sorted set, per quota scope: holder -> when its answer came back (ms), or its
--                lease expiry while it is in flight
--
-- The window is the platform's own rule ("at most N requests in any window_ms"), kept
-- where the platform keeps it: a request arrives there somewhere between our grant and
-- its answer, so a request counts against the window until window_ms after its answer.
-- That holds even when a request leaves late (a new connection, a busy host), which
-- spacing grants alone cannot promise.
--
-- Returns {0, ""} when the caller may send now (its holder is registered), else
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
return {0, ''}
