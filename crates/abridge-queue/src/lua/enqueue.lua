-- enqueue: make a new batch's items ready, in input order.
--
-- KEYS[1] rotation list for the batch's priority (PREFIX.."rr:"..rank)
-- KEYS[2] the batch's ready set (PREFIX.."q:"..batch)
-- KEYS[3] wake list
-- KEYS[4] the batch's cancel marker (PREFIX.."cancelled:"..batch)
-- ARGV[1] batch id
-- ARGV[2..] pairs: position, item id
-- Returns the number of items added (0 if the batch is cancelled).

if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
if #ARGV < 3 then
  return 0
end
local was_empty = redis.call('EXISTS', KEYS[2]) == 0
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = ARGV[i]
end
call_chunked('ZADD', KEYS[2], args, 2)
if was_empty then
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
local n = (#ARGV - 1) / 2
wake(KEYS[3], n, 64)
return n
