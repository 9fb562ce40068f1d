-- release_worker: drop every lease a worker holds (it was buried as dead, or is shutting down).
--
-- KEYS[1] lease deadlines (ZSET)
-- KEYS[2] lease holders (HASH item -> "token|worker|batch|rank|position")
-- KEYS[3] taken (ZSET "item|token" -> ms): the dropped leases are remembered (see reap.lua)
-- ARGV[1] worker id
-- Returns groups of 6 for the dropped leases: item, token, worker, batch, rank, position.

local out = {}
local now = now_ms()
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = split(all[i + 1])
  if f[2] == ARGV[1] then
    redis.call('ZREM', KEYS[1], all[i])
    redis.call('HDEL', KEYS[2], all[i])
    remember_taken(KEYS[3], all[i], f[1], now)
    out[#out + 1] = all[i]
    for j = 1, 5 do
      out[#out + 1] = f[j]
    end
  end
end
return out
