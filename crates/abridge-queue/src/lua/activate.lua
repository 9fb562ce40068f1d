-- activate: make a new batch's staged items ready, once its rows are committed. A large batch
-- is staged (PREFIX.."staged:"..batch, plain ZADDs while Postgres writes its rows), which no
-- claim can see; this moves the staged set into place in O(1) when the batch's ready set is
-- empty, as it is for a new batch (the reconciler may have queued some of its items already:
-- then the two sets are merged).
--
-- KEYS[1] rotation list of owners for the batch's priority (PREFIX.."owners:"..rank)
-- KEYS[2] the batch's ready set (PREFIX.."q:"..batch)
-- KEYS[3] the batch's cancel marker (PREFIX.."cancelled:"..batch)
-- KEYS[4] the batch's staged set (PREFIX.."staged:"..batch)
-- KEYS[5] wake list (first shard only; left out elsewhere)
-- ARGV[1] batch id
-- ARGV[2] PREFIX, for the owner's keys
-- ARGV[3] the batch's priority rank
-- ARGV[4] owner (a tenant's name, or "~")
-- ARGV[5] the owner's weight
-- ARGV[6] the owner's limit on items in flight (0: none)
-- Returns the number of staged items made ready (0 if the batch is cancelled, or its staged
-- set expired or was never written: the caller then enqueues the items itself).

if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('DEL', KEYS[4])
  return 0
end
local n = redis.call('ZCARD', KEYS[4])
if n == 0 then
  return 0
end
own(ARGV[2], ARGV[1], ARGV[4], ARGV[5], ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[4], KEYS[2])
  redis.call('PERSIST', KEYS[2])
  rotate_in(ARGV[2], ARGV[3], ARGV[1])
else
  redis.call('ZUNIONSTORE', KEYS[2], 2, KEYS[2], KEYS[4], 'AGGREGATE', 'MIN')
  redis.call('DEL', KEYS[4])
end
wake(KEYS[5], n, 64)
return n
