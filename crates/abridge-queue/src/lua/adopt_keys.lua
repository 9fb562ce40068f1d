-- adopt_keys: moves what a build before the key renaming wrote under its names ("rr:",
-- "orr:", "leases", "lease", "dref") to today's, merging with what is there, so that an
-- upgrade keeps every item's place and lease. Does nothing once the old keys are gone.
--
-- KEYS[1..3] old rotation lists of owners, ranks 0..2 ("rr:"..rank)
-- KEYS[4..6] rotation lists of owners, ranks 0..2
-- KEYS[7] old lease deadlines ("leases")   KEYS[8] lease deadlines
-- KEYS[9] old lease holders ("lease")      KEYS[10] lease holders
-- KEYS[11] old delayed places ("dref")     KEYS[12] delayed places
-- ARGV[1] PREFIX, for the owners' batch lists
-- Returns how many entries (batches in rotation, leases, delayed places) it moved.

local prefix = ARGV[1]
local moved = 0
for rank = 0, 2 do
  local old, new = KEYS[1 + rank], KEYS[4 + rank]
  for _, owner in ipairs(redis.call('LRANGE', old, 0, -1)) do
    local from = prefix .. 'orr:' .. rank .. ':' .. owner
    local to = prefix .. 'batches:' .. rank .. ':' .. owner
    if redis.call('EXISTS', from) == 0 then
      -- A partial loss emptied it; the reconciler puts its batches back in rotation.
    elseif redis.call('EXISTS', to) == 0 then
      moved = moved + redis.call('LLEN', from)
      redis.call('RENAME', from, to)
    else
      for _, batch in ipairs(redis.call('LRANGE', from, 0, -1)) do
        if not redis.call('LPOS', to, batch) then
          redis.call('RPUSH', to, batch)
          moved = moved + 1
        end
      end
      redis.call('DEL', from)
    end
    if redis.call('EXISTS', to) == 1 and not redis.call('LPOS', new, owner) then
      list_owner(prefix, rank, owner)
    end
  end
  redis.call('DEL', old)
end

-- Moves hash `old` into `new` (a rename when `new` is absent, the usual case); where both
-- have a field, today's wins: the newer build wrote it. Returns how many fields `old` had.
local function adopt_hash(old, new)
  local n = redis.call('HLEN', old)
  if n == 0 then
    return 0
  end
  if redis.call('EXISTS', new) == 0 then
    redis.call('RENAME', old, new)
    return n
  end
  local fields = redis.call('HGETALL', old)
  for i = 1, #fields, 2 do
    redis.call('HSETNX', new, fields[i], fields[i + 1])
  end
  redis.call('DEL', old)
  return n
end

-- A deadline both layouts hold is the later one: a renewal may have landed on either.
local leased = redis.call('ZCARD', KEYS[7])
if leased > 0 then
  if redis.call('EXISTS', KEYS[8]) == 0 then
    redis.call('RENAME', KEYS[7], KEYS[8])
  else
    redis.call('ZUNIONSTORE', KEYS[8], 2, KEYS[8], KEYS[7], 'AGGREGATE', 'MAX')
    redis.call('DEL', KEYS[7])
  end
end
adopt_hash(KEYS[9], KEYS[10])
return moved + leased + adopt_hash(KEYS[11], KEYS[12])
