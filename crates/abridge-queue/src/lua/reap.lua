-- reap: take the expired leases (deadline passed), removing them atomically so that of several
-- reapers exactly one handles each.
--
-- KEYS[1] lease deadlines (ZSET item -> deadline ms)
-- KEYS[2] lease holders (HASH item -> "token|worker|batch|rank|position")
-- KEYS[3] taken (ZSET "item|token" -> ms): each lease taken here is remembered, so its old
--         holder's renewal cannot re-create it
-- ARGV[1] the most leases to take
-- Returns groups of 6: item, token, worker, batch, rank, position.

local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, item in ipairs(expired) do
  local held = redis.call('HGET', KEYS[2], item)
  redis.call('ZREM', KEYS[1], item)
  redis.call('HDEL', KEYS[2], item)
  if held then
    local f = split(held)
    remember_taken(KEYS[3], item, f[1], now)
    out[#out + 1] = item
    for j = 1, 5 do
      out[#out + 1] = f[j]
    end
  end
end
return out
