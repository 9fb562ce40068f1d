-- held: for the reconciler, which of a batch's items Redis holds (ready, delayed or leased),
-- and repair the batch's place in its rotation list if a partial loss broke it.
--
-- KEYS[1] rotation list for the batch's priority
-- KEYS[2] the batch's ready set
-- KEYS[3] delayed (ZSET)
-- KEYS[4] leases (ZSET)
-- ARGV[1] batch id
-- ARGV[2..] item ids
-- Returns one flag per item: 1 held, 0 missing.

if redis.call('EXISTS', KEYS[2]) == 1 and not redis.call('LPOS', KEYS[1], ARGV[1]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
local out = {}
for i = 2, #ARGV do
  local item = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], item) or redis.call('ZSCORE', KEYS[3], item)
      or redis.call('ZSCORE', KEYS[4], item) then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
