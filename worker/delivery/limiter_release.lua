-- release(KEYS = [inflight_key, window_key], ARGV = [holder, window_ms])
-- The request of `holder` got its answer: it leaves the in-flight set, and its place in
-- the platform's window now ends window_ms after this moment (Redis's clock, as acquire).
-- The window's expiry only ever grows (GT): other holders in it may still be in flight.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 1000, 'GT')
return 1
