-- budget: takes `cost` from a token bucket shared by every worker of the fleet (YouTube requests
-- per second, LLM requests or tokens per minute). The bucket refills continuously at `rate`
-- per second up to `capacity`, on Redis's clock. A cost above the capacity is admitted once the
-- bucket is full and leaves it in debt, so huge requests cannot starve yet the long-run rate
-- holds. A bucket lost with Redis's data comes back full (one burst).
--
-- KEYS[1] the bucket (HASH: tokens, at = ms of the last update)
-- ARGV[1] rate: tokens added per second (> 0, may be fractional)
-- ARGV[2] capacity: most tokens the bucket holds (the burst)
-- ARGV[3] cost: tokens this call takes
-- Returns 0 when the cost was taken, else the milliseconds to wait before asking again.

local now = now_ms()
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
end
local need = math.min(cost, capacity)
if tokens < need then
  return math.max(1, math.ceil((need - tokens) * 1000 / rate))
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
-- Gone once it would be full again anyway.
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 1000 / rate) + 1000)
return 0
