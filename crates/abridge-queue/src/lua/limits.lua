-- limits: record an owner's weight and limit on items in flight at once, as the operator just
-- set them, so they apply to the owner's queued batches now (not only from its next enqueue).
--
-- KEYS[1] weights (HASH owner -> weight, for weights other than 1)
-- KEYS[2] caps (HASH owner -> most items leased at once)
-- ARGV[1] owner (a tenant's name)
-- ARGV[2] its weight
-- ARGV[3] its limit on items in flight (0: none)
-- Returns nothing.

if tonumber(ARGV[2]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
