-- ack: a worker lets go of items it claimed (finished, dropped, or to be retried later).
-- A lease is only removed if it still carries the caller's token, and an item is only placed
-- again by the holder of its lease: a stale give-back (its lease taken, the item requeued or
-- delayed by someone else) places nothing.
--
-- KEYS[1] lease deadlines (ZSET)
-- KEYS[2] lease holders (HASH)
-- KEYS[3] delayed (ZSET)
-- KEYS[4] delayed places (HASH)
-- KEYS[5] wake list (first shard only; left out elsewhere)
-- ARGV[1] PREFIX, for per-batch keys
-- ARGV[2] K, the number of batch ids that follow whose ready counts to report
-- ARGV[3..2+K] those batch ids
-- ARGV[3+K..] groups of 6: item id, token, batch, rank, position, requeue
--           requeue: -1 to drop the item, 0 to make it ready now, >0 to retry after that many ms
-- Returns { leases removed, then for each reported batch its ready item count }.
-- (A finisher checks a batch for completion in Postgres only once no item of it is ready.)

local prefix = ARGV[1]
local k = tonumber(ARGV[2])
local now = now_ms()
local ready = 0

-- Every lease record in one call; the caller's are removed in two more, before any item is
-- placed again (placing skips an item that still has a lease).
local items, tokens = {}, {}
for i = 3 + k, #ARGV, 6 do
  items[#items + 1] = ARGV[i]
  tokens[#tokens + 1] = ARGV[i + 1]
end
local held = call_gathered('HMGET', KEYS[2], items)
local gone, holds = {}, {}
for n, item in ipairs(items) do
  if held[n] and first_field_is(held[n], tokens[n]) then
    gone[#gone + 1] = item
    holds[n] = true
  end
end
call_chunked('ZREM', KEYS[1], gone, 1)
call_chunked('HDEL', KEYS[2], gone, 1)
-- A capped owner's count of leased items loses these.
if redis.call('HLEN', prefix .. 'caps') > 0 then
  local owners = {}
  for n, item in ipairs(items) do
    if held[n] and first_field_is(held[n], tokens[n]) then
      track(prefix, owners, split(held[n])[3], item, nil)
    end
  end
end

for i = 3 + k, #ARGV, 6 do
  local item, batch, rank, pos, requeue =
    ARGV[i], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  if requeue >= 0 and holds[(i - 3 - k) / 6 + 1] then
    local due = 0
    if requeue > 0 then
      due = now + requeue
    end
    if place(prefix, KEYS[1], KEYS[3], KEYS[4], item, batch, rank, pos, due, now) == 2 then
      ready = ready + 1
    end
  end
end
wake(KEYS[5], ready, 64)
local out = { #gone }
for j = 3, 2 + k do
  out[#out + 1] = redis.call('ZCARD', prefix .. 'q:' .. ARGV[j])
end
return out
