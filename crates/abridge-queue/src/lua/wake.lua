-- wake: wake idle workers for items a script placed on a shard other than the first, whose
-- scripts cannot reach the fleet's wake list (it lives on the first shard).
--
-- KEYS[1] wake list (PREFIX.."wake" of the first shard)
-- ARGV[1] how many items were placed ready
-- ARGV[2] most tokens to leave waiting in the list
-- Returns nothing.

wake(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
