-- cancel: stop handing out a batch's items and tell workers holding them to stop.
--
-- KEYS[1] rotation list for the batch's priority
-- KEYS[2] the batch's ready set
-- KEYS[3] the batch's cancel marker
-- KEYS[4] delayed (ZSET)
-- KEYS[5] dref (HASH)
-- ARGV[1] batch id
-- ARGV[2] how long the cancel marker lives, ms (longer than any lease)
-- ARGV[3] the pub/sub channel workers listen on
-- Returns the number of ready or delayed items dropped.

redis.call('SET', KEYS[3], 1, 'PX', ARGV[2])
local dropped = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('LREM', KEYS[1], 0, ARGV[1])
local refs = redis.call('HGETALL', KEYS[5])
for i = 1, #refs, 2 do
  if first_field_is(refs[i + 1], ARGV[1]) then
    redis.call('ZREM', KEYS[4], refs[i])
    redis.call('HDEL', KEYS[5], refs[i])
    dropped = dropped + 1
  end
end
redis.call('PUBLISH', ARGV[3], 'cancel ' .. ARGV[1])
return dropped
