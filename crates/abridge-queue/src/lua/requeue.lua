-- requeue: put items that Postgres says are queued back where they belong: ready in their
-- batch, or delayed until their retry time. Used by the reaper and the reconciler. Skips items
-- someone holds a lease on and items of cancelled batches; placing an item twice is harmless.
--
-- KEYS[1] lease deadlines (ZSET)
-- KEYS[2] delayed (ZSET)
-- KEYS[3] delayed places (HASH)
-- KEYS[4] wake list (first shard only; left out elsewhere)
-- ARGV[1] PREFIX, for per-batch keys
-- ARGV[2..] groups of 5: item id, batch, rank, position, due (ms since epoch; 0 = now)
-- Returns the number of items placed.

local prefix = ARGV[1]
local now = now_ms()
local placed, ready = 0, 0
for i = 2, #ARGV, 5 do
  local r = place(prefix, KEYS[1], KEYS[2], KEYS[3], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    tonumber(ARGV[i + 4]), now)
  if r > 0 then
    placed = placed + 1
  end
  if r == 2 then
    ready = ready + 1
  end
end
wake(KEYS[4], ready, 64)
return placed
