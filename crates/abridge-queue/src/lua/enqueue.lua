-- enqueue: make a new batch's items ready, in input order, and record its owner. On a queue of
-- several shards, called once per shard with the items placed there.
--
-- KEYS[1] rotation list of owners for the batch's priority (PREFIX.."owners:"..rank)
-- KEYS[2] the batch's ready set (PREFIX.."q:"..batch)
-- KEYS[3] the batch's cancel marker (PREFIX.."cancelled:"..batch)
-- KEYS[4] wake list (first shard only; left out elsewhere)
-- ARGV[1] batch id
-- ARGV[2] PREFIX, for the owner's keys
-- ARGV[3] the batch's priority rank
-- ARGV[4] owner (a tenant's name, or "~")
-- ARGV[5] the owner's weight
-- ARGV[6] the owner's limit on items in flight (0: none)
-- ARGV[7..] pairs: position, item id
-- Returns the number of items added (0 if the batch is cancelled).

if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
if #ARGV < 8 then
  return 0
end
own(ARGV[2], ARGV[1], ARGV[4], ARGV[5], ARGV[6])
local was_empty = redis.call('EXISTS', KEYS[2]) == 0
local args = {}
for i = 7, #ARGV do
  args[#args + 1] = ARGV[i]
end
call_chunked('ZADD', KEYS[2], args, 2)
if was_empty then
  rotate_in(ARGV[2], ARGV[3], ARGV[1])
end
local n = (#ARGV - 6) / 2
wake(KEYS[4], n, 64)
return n
