-- renew: extend the leases a worker holds, and tell it which ones it has lost.
--
-- KEYS[1] lease deadlines (ZSET item -> deadline ms)
-- KEYS[2] lease holders (HASH item -> "token|worker|batch|rank|position")
-- KEYS[3] delayed (ZSET)
-- KEYS[4] taken (ZSET "item|token" -> ms): leases reapers took
-- ARGV[1] PREFIX, for per-batch keys
-- ARGV[2] worker id
-- ARGV[3] lease duration ms
-- ARGV[4..] groups of 5: item id, token, batch, rank, position
-- Returns one code per item: 1 renewed, 0 lost (another claim holds it, or it was requeued),
-- 2 cancelled (its batch was cancelled), 3 re-created (Redis had lost the lease and the item
-- was nowhere else, as after a FLUSHALL: the holder re-asserts it; Postgres still fences it).
-- A lease a reaper took is lost, never re-created: the reaper is about to requeue the item.

local prefix, worker = ARGV[1], ARGV[2]
local deadline = now_ms() + tonumber(ARGV[3])
local out = {}
local capped = redis.call('HLEN', prefix .. 'caps') > 0
local owners = {}
for i = 4, #ARGV, 5 do
  local item, token, batch, rank, pos = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local code
  local held = redis.call('HGET', KEYS[2], item)
  if redis.call('EXISTS', prefix .. 'cancelled:' .. batch) == 1 then
    code = 2
  elseif held then
    if first_field_is(held, token) then
      redis.call('ZADD', KEYS[1], deadline, item)
      code = 1
    else
      code = 0
    end
  elseif redis.call('ZSCORE', KEYS[4], item .. '|' .. token)
      or redis.call('ZSCORE', prefix .. 'q:' .. batch, item) or redis.call('ZSCORE', KEYS[3], item) then
    code = 0
  else
    redis.call('ZADD', KEYS[1], deadline, item)
    redis.call('HSET', KEYS[2], item, token .. '|' .. worker .. '|' .. batch .. '|' .. rank .. '|' .. pos)
    code = 3
  end
  if capped and (code == 1 or code == 3) then
    track(prefix, owners, batch, item, deadline)
  end
  out[#out + 1] = code
end
return out
