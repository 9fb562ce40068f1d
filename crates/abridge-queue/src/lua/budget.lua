-- budget: takes `cost` from a token bucket shared by every worker of the fleet (YouTube requests
-- per second, LLM requests or tokens per minute), for one owner (a tenant, or "~" for batches
-- of none). The bucket refills continuously at `rate` per second up to `capacity`, on Redis's
-- clock. A cost above the capacity is admitted once the bucket is full and leaves it in debt,
-- so huge requests cannot starve yet the long-run rate holds. A bucket lost with Redis's data
-- comes back full (one burst).
--
-- Fair share: while another owner is waiting for this bucket, an owner that has recently used
-- more than an equal share of it (its use decays by half every refill time of the bucket) is
-- made to wait too, so one owner cannot spend the whole budget while others wait. With nobody
-- else waiting, an owner may use it all.
--
-- KEYS[1] the bucket (HASH: tokens, at = ms of the last update)
-- KEYS[2] its owners' recent use (HASH: owner -> "use|ms of the last update")
-- KEYS[3] its waiting owners (ZSET: owner -> ms until which it counts as waiting)
-- ARGV[1] rate: tokens added per second (> 0, may be fractional)
-- ARGV[2] capacity: most tokens the bucket holds (the burst)
-- ARGV[3] cost: tokens this call takes
-- ARGV[4] owner
-- Returns 0 when the cost was taken, else the milliseconds to wait before asking again.

local now = now_ms()
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local owner = ARGV[4]
-- The bucket's refill time: how long "recently" is, and how long the keys live unused.
local refill_ms = math.ceil(capacity * 1000 / rate)

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
end

local used = 0
local mine = redis.call('HGET', KEYS[2], owner)
if mine then
  local f = split(mine)
  used = tonumber(f[1]) * 0.5 ^ (math.max(0, now - tonumber(f[2])) / refill_ms)
end

-- Makes this owner wait `ms`, counting it as waiting until a little after it asks again.
local function refuse(ms)
  ms = math.max(1, math.ceil(ms))
  redis.call('ZADD', KEYS[3], now + ms + 1000, owner)
  redis.call('PEXPIRE', KEYS[3], ms + refill_ms + 1000)
  return ms
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local waiting = redis.call('ZCARD', KEYS[3])
if redis.call('ZSCORE', KEYS[3], owner) then
  waiting = waiting - 1
end
if waiting > 0 then
  local share = capacity / (waiting + 1)
  if used > share then
    -- Wait until this owner's use has decayed to its share.
    return refuse(refill_ms * math.log(used / share) / math.log(2))
  end
end

local need = math.min(cost, capacity)
if tokens < need then
  return refuse((need - tokens) * 1000 / rate)
end
tokens = tokens - cost
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
-- Gone once it would be full again anyway.
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) * 1000 / rate) + 1000)
redis.call('HSET', KEYS[2], owner, tostring(used + cost) .. '|' .. now)
redis.call('PEXPIRE', KEYS[2], refill_ms * 8 + 1000)
redis.call('ZREM', KEYS[3], owner)
return 0
