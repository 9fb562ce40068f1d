-- stats: queue depth at a glance.
--
-- KEYS[1..3] rotation lists of owners for ranks 0, 1, 2
-- KEYS[4] lease deadlines (ZSET)
-- KEYS[5] delayed (ZSET)
-- ARGV[1] PREFIX, for per-batch keys
-- Returns { ready_high, ready_normal, ready_low, leased, delayed, batches_in_rotation }.

local out = {}
local batches = 0
for rank = 0, 2 do
  local ready = 0
  for _, owner in ipairs(redis.call('LRANGE', KEYS[1 + rank], 0, -1)) do
    local ids = redis.call('LRANGE', ARGV[1] .. 'batches:' .. rank .. ':' .. owner, 0, -1)
    for _, b in ipairs(ids) do
      ready = ready + redis.call('ZCARD', ARGV[1] .. 'q:' .. b)
    end
    batches = batches + #ids
  end
  out[#out + 1] = ready
end
out[#out + 1] = redis.call('ZCARD', KEYS[4])
out[#out + 1] = redis.call('ZCARD', KEYS[5])
out[#out + 1] = batches
return out
