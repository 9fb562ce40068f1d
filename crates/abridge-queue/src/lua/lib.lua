-- Shared helpers, prepended to every transition script (see scripts.rs). Not a transition.
--
-- Key layout under PREFIX = "{redis_prefix}:{{tag}}:" (the braces make one cluster hash slot).
-- A queue has one or more shards (ABRIDGE_QUEUE_SHARDS), each under its own tag (keys.rs,
-- shard_tags): every script runs on one shard. The first shard's tag is the queue's name, and
-- the keys marked "first shard" below exist there only: they are the queue's, not a shard's.
--   PREFIX.."owners:"..rank   LIST  owners in round-robin rotation, one list per priority rank
--                                   (an owner is a tenant's name, or "~" for batches of none)
--   PREFIX.."batches:"..rank..":"..owner
--                             LIST  the owner's batch ids in round-robin rotation at that rank
--   PREFIX.."turn:"..rank     HASH  owner, left: the turn a claim filled up before its end (the
--                                   owner then at the head of "owners:"..rank, and what it
--                                   has left to give); the next claim goes on with it if that
--                                   owner is still at the head
--   PREFIX.."owner:"..batch   STRING the batch's owner (expires; "~" when missing)
--   PREFIX.."weights"         HASH  owner -> its share of the queue against the others', for
--                                   weights other than 1 (an owner not listed weighs 1)
--   PREFIX.."caps"            HASH  owner -> most of its items leased at once, for owners with
--                                   such a limit
--   PREFIX.."inflight:"..owner ZSET a capped owner's leased items: member item id, score the
--                                   lease deadline (ms); entries past it no longer count
--   PREFIX.."q:"..batch       ZSET  a batch's ready items: member item id, score position
--   PREFIX.."staged:"..batch  ZSET  a large new batch's items, written while its rows commit;
--                                   no claim reads it (activate.lua makes it the "q:" set;
--                                   it expires if the enqueuer dies first)
--   PREFIX.."delayed"         ZSET  items waiting to retry: member item id, score due time (ms)
--   PREFIX.."delayed-places"  HASH  delayed item id -> "batch|rank|position": where it goes when due
--   PREFIX.."lease-deadlines" ZSET  claimed items: member item id, score lease deadline (ms)
--   PREFIX.."lease-holders"   HASH  claimed item id -> "token|worker|batch|rank|position"
--   PREFIX.."taken"           ZSET  leases a reaper took: member "item|token", score when (ms);
--                                   kept an hour, so that the old holder's renewal is told
--                                   it lost the item instead of re-creating the lease
--   PREFIX.."wake"            LIST  wake-up tokens that idle workers block on (first shard only)
--   PREFIX.."paused"          STRING present while the queue is paused (a copy of Postgres's
--                                   queue_pauses row, put back by the reconciler)
--   PREFIX.."pause-generation" STRING the generation of that copy (pause.lua)
--   PREFIX.."cancelled:"..b   STRING present while batch b is cancelled (expires)
--   PREFIX.."epoch"           STRING present unless Redis lost its data since the last reconcile
--   PREFIX.."reconcile-lock"  STRING the worker whose turn it is to reconcile (expires)
--   PREFIX.."shards"          SET   hash tags of the shards that may hold items (first shard)
--   PREFIX.."reconciled"      HASH  the last reconcile pass: drift, requeued, at_ms (fleet gauges)
--   PREFIX.."budget:"..name   HASH  a fleet-wide token bucket: tokens, at (budget.lua)
--   PREFIX.."budget:"..name..":owners"
--                             HASH  owner -> "use|ms": each owner's recent use of the bucket
--   PREFIX.."budget:"..name..":waiting"
--                             ZSET  owners waiting for the bucket: owner -> ms until then
--   PREFIX.."tokens:"..tenant..":"..day
--                             STRING LLM tokens the tenant's items spent that UTC day (INCRBY)
--   PREFIX.."text-only:"..h   STRING present (a day) while the LLM server and model hashed as h
--                                   refuse structured answers (set and read outside scripts)
--   PREFIX.."breaker:"..name  HASH  a fleet-wide circuit breaker: failures, open_until, probe_until
-- Pub/sub channels (not keys): PREFIX.."events" (cancel notices, to workers),
-- PREFIX.."progress" (batch ids whose items changed state, to API processes) and
-- PREFIX.."ranks" (a rank more urgent than the least that had no owner on the shard got one:
-- the rank, to the claim loops of workers that may be working other shards).
-- Invariant: a batch id is in its owner's rotation list exactly when its "q:" set is
-- non-empty, and an owner is in "owners:" exactly when its own list is non-empty.
-- Per-batch keys are built from PREFIX inside scripts; they share the queue's hash slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s)
  local out = {}
  for part in string.gmatch(s, '[^|]+') do
    out[#out + 1] = part
  end
  return out
end

-- Whether `v` is the first |-separated field of `s`: what split(s)[1] == v says, without
-- building a table (the hot scripts ask it once per item).
local function first_field_is(s, v)
  return string.sub(s, 1, #v + 1) == v .. '|'
end

-- Calls redis command `cmd` on `key` with the flat argument list `args`, in chunks small
-- enough for Lua's unpack() limit. `width` keeps argument groups (pairs) together.
local function call_chunked(cmd, key, args, width)
  local chunk = 500 * width
  for i = 1, #args, chunk do
    redis.call(cmd, key, unpack(args, i, math.min(i + chunk - 1, #args)))
  end
end

-- Calls read command `cmd` (HMGET, ZMSCORE) on `key` for every member of `members`, in chunks
-- small enough for unpack(), and returns the replies as one list, in order (false: none).
local function call_gathered(cmd, key, members)
  local out = {}
  for i = 1, #members, 500 do
    local part = redis.call(cmd, key, unpack(members, i, math.min(i + 499, #members)))
    for _, v in ipairs(part) do
      out[#out + 1] = v
    end
  end
  return out
end

-- The batch's owner: a tenant's name, or "~" (no tenant, or its record is gone: the batch
-- then shares the "~" turn until an enqueue or the reconciler records its owner again).
local function owner_of(prefix, batch)
  return redis.call('GET', prefix .. 'owner:' .. batch) or '~'
end

-- Puts `owner` at the back of the rank's rotation. A rank of urgent work (0 or 1) that had no
-- owner on this shard says so on the "ranks" channel: claim loops working other shards do not
-- look here each round (claim.rs), so every way an owner enters a rank goes through here.
local function list_owner(prefix, rank, owner)
  local owners = redis.call('RPUSH', prefix .. 'owners:' .. rank, owner)
  if owners == 1 and tonumber(rank) < 2 then
    redis.call('PUBLISH', prefix .. 'ranks', rank)
  end
end

-- Puts `batch` (whose ready set just became non-empty) in its owner's rotation at `rank`, and
-- the owner in the rank's rotation if it had no batch there.
local function rotate_in(prefix, rank, batch)
  local owner = owner_of(prefix, batch)
  local list = prefix .. 'batches:' .. rank .. ':' .. owner
  if redis.call('EXISTS', list) == 0 then
    list_owner(prefix, rank, owner)
  end
  redis.call('RPUSH', list, batch)
end

-- Takes `batch` (whose ready set is empty or gone) out of its owner's rotation at `rank`, and
-- the owner out of the rank's if that was its last batch there.
local function rotate_out(prefix, rank, batch, owner)
  owner = owner or owner_of(prefix, batch)
  local list = prefix .. 'batches:' .. rank .. ':' .. owner
  -- From the tail: a claim has just moved the batch there (a batch is listed once).
  redis.call('LREM', list, -1, batch)
  if redis.call('EXISTS', list) == 0 then
    redis.call('LREM', prefix .. 'owners:' .. rank, 0, owner)
  end
end

-- Records `batch`'s owner (for as long as a batch could wait), the owner's weight, and its
-- limit on items in flight (`cap`; 0: none).
local function own(prefix, batch, owner, weight, cap)
  redis.call('SET', prefix .. 'owner:' .. batch, owner, 'EX', 2592000)
  if tonumber(weight) == 1 then
    redis.call('HDEL', prefix .. 'weights', owner)
  else
    redis.call('HSET', prefix .. 'weights', owner, weight)
  end
  if tonumber(cap) > 0 then
    redis.call('HSET', prefix .. 'caps', owner, cap)
  else
    redis.call('HDEL', prefix .. 'caps', owner)
  end
end

-- How many more items `owner` may have leased now; nil when it has no cap. Entries whose
-- lease deadline has passed are dropped first: an expired lease is no longer in flight.
local function room(prefix, owner, now)
  local cap = redis.call('HGET', prefix .. 'caps', owner)
  if not cap then
    return nil
  end
  local key = prefix .. 'inflight:' .. owner
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return math.max(0, tonumber(cap) - redis.call('ZCARD', key))
end

-- Keeps a capped owner's count of leased items: `item`'s lease (of `batch`) runs until
-- `deadline`, or is gone (`deadline` nil). `owners` caches batch -> owner for one call.
local function track(prefix, owners, batch, item, deadline)
  local owner = owners[batch]
  if not owner then
    owner = owner_of(prefix, batch)
    owners[batch] = owner
  end
  if redis.call('HEXISTS', prefix .. 'caps', owner) == 0 then
    return
  end
  if deadline then
    redis.call('ZADD', prefix .. 'inflight:' .. owner, deadline, item)
  else
    redis.call('ZREM', prefix .. 'inflight:' .. owner, item)
  end
end

-- Makes `item` ready in its batch, or delayed until `due` (ms), unless its batch is cancelled
-- or someone holds a lease on it (the holder settles it). Returns 1 if placed, 2 if placed
-- ready, 0 if skipped.
local function place(prefix, deadlines, delayed, places, item, batch, rank, pos, due, now)
  if redis.call('EXISTS', prefix .. 'cancelled:' .. batch) == 1 then
    return 0
  end
  if redis.call('ZSCORE', deadlines, item) then
    return 0
  end
  local q = prefix .. 'q:' .. batch
  if due > now then
    redis.call('ZREM', q, item)
    redis.call('ZADD', delayed, due, item)
    redis.call('HSET', places, item, batch .. '|' .. rank .. '|' .. pos)
    return 1
  end
  redis.call('ZREM', delayed, item)
  redis.call('HDEL', places, item)
  local was_empty = redis.call('EXISTS', q) == 0
  redis.call('ZADD', q, pos, item)
  if was_empty then
    rotate_in(prefix, rank, batch)
  end
  return 2
end

-- Wakes idle workers: at most `limit` tokens wait in the list. Scripts take the wake list as
-- their last key, and only on the first shard (the fleet's one list): elsewhere `key` is nil
-- and the caller wakes the first shard's list (wake.lua) after the call.
local function wake(key, n, limit)
  if not key or n <= 0 then
    return
  end
  local have = redis.call('LLEN', key)
  for _ = 1, math.min(n, limit - have) do
    redis.call('LPUSH', key, 1)
  end
end

-- How long a taken lease is remembered (ms): far longer than a renewal can be in flight.
local TAKEN_KEPT_MS = 3600000

-- Remembers that the lease `item` held under `token` was taken from its holder, and forgets
-- takings older than TAKEN_KEPT_MS.
local function remember_taken(key, item, token, now)
  redis.call('ZADD', key, now, item .. '|' .. token)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - TAKEN_KEPT_MS)
end
