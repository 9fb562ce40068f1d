-- cancel: stop handing out a batch's items and tell workers holding them to stop. O(the
-- batch's items): the caller names them (Postgres knows them), so no other batch's delayed
-- retries are read. A batch with many items is cancelled in several calls; only the first
-- (on each shard) sets the marker, drops the ready set and publishes.
--
-- KEYS[1] rotation list of owners for the batch's priority
-- KEYS[2] the batch's ready set
-- KEYS[3] the batch's cancel marker
-- KEYS[4] delayed (ZSET)
-- KEYS[5] delayed places (HASH)
-- ARGV[1] batch id
-- ARGV[2] how long the cancel marker lives, ms (longer than any lease)
-- ARGV[3] the pub/sub channel workers listen on ("": tell nobody; another shard's call does)
-- ARGV[4] "1" on the first call for the batch on this shard, "0" on the others
-- ARGV[5] PREFIX, for the owner's keys
-- ARGV[6] the batch's priority rank
-- ARGV[7..] item ids of the batch that may be waiting to retry
-- Returns the number of ready or delayed items dropped.

local dropped = 0
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], 1, 'PX', ARGV[2])
  dropped = redis.call('ZCARD', KEYS[2])
  redis.call('DEL', KEYS[2])
  rotate_out(ARGV[5], ARGV[6], ARGV[1])
end
for i = 7, #ARGV do
  if redis.call('ZREM', KEYS[4], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[5], ARGV[i])
    dropped = dropped + 1
  end
end
if ARGV[4] == '1' and ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], 'cancel ' .. ARGV[1])
end
return dropped
