-- held: for the reconciler, which of a batch's items Redis holds (ready, delayed or leased);
-- records the batch's owner again and repairs its place in the rotation if a partial loss
-- broke them.
--
-- KEYS[1] rotation list of owners for the batch's priority
-- KEYS[2] the batch's ready set
-- KEYS[3] delayed (ZSET)
-- KEYS[4] lease deadlines (ZSET)
-- ARGV[1] batch id
-- ARGV[2] PREFIX, for the owner's keys
-- ARGV[3] the batch's priority rank
-- ARGV[4] owner (a tenant's name, or "~")
-- ARGV[5] the owner's weight
-- ARGV[6] the owner's limit on items in flight (0: none)
-- ARGV[7..] item ids
-- Returns one flag per item: 1 held, 0 missing.

local prefix, rank, owner = ARGV[2], ARGV[3], ARGV[4]
local recorded = redis.call('GET', prefix .. 'owner:' .. ARGV[1])
if recorded and recorded ~= owner then
  rotate_out(prefix, rank, ARGV[1], recorded)
end
own(prefix, ARGV[1], owner, ARGV[5], ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 1
    and not redis.call('LPOS', prefix .. 'batches:' .. rank .. ':' .. owner, ARGV[1]) then
  rotate_out(prefix, rank, ARGV[1], '~')
  rotate_in(prefix, rank, ARGV[1])
end
-- An owner with batches at this rank is in the rank's rotation (a partial loss can drop it).
if redis.call('EXISTS', prefix .. 'batches:' .. rank .. ':' .. owner) == 1
    and not redis.call('LPOS', KEYS[1], owner) then
  list_owner(prefix, rank, owner)
end
local out = {}
for i = 7, #ARGV do
  local item = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], item) or redis.call('ZSCORE', KEYS[3], item)
      or redis.call('ZSCORE', KEYS[4], item) then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
