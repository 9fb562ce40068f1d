-- pause: write Redis's copy of a queue's pause, unless Redis holds a newer one. Resuming wakes
-- an idle worker (which passes the wake-up on while it finds more work than it can carry).
--
-- KEYS[1] paused marker (present while paused)
-- KEYS[2] the generation of the copy Redis holds
-- KEYS[3] wake list (first shard only; left out elsewhere)
-- ARGV[1] the generation written (Postgres's, which every pause and resume moves on)
-- ARGV[2] 1 to pause, 0 to resume
-- Returns 1 if written, 0 if Redis already held a newer generation.

local generation = tonumber(ARGV[1])
if (tonumber(redis.call('GET', KEYS[2])) or 0) > generation then
  return 0
end
redis.call('SET', KEYS[2], generation)
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], 1)
elseif redis.call('DEL', KEYS[1]) == 1 then
  wake(KEYS[3], 1, 64)
end
return 1
