-- Shared helpers, prepended to every transition script (see scripts.rs). Not a transition.
--
-- Key layout under PREFIX = "{redis_prefix}:{{queue}}:" (the braces make one cluster hash slot):
--   PREFIX.."rr:"..rank       LIST  batch ids in round-robin rotation, one list per priority rank
--   PREFIX.."q:"..batch       ZSET  a batch's ready items: member item id, score position
--   PREFIX.."staged:"..batch  ZSET  a large new batch's items, written while its rows commit;
--                                   no claim reads it (activate.lua makes it the "q:" set;
--                                   it expires if the enqueuer dies first)
--   PREFIX.."delayed"         ZSET  items waiting to retry: member item id, score due time (ms)
--   PREFIX.."dref"            HASH  delayed item id -> "batch|rank|position"
--   PREFIX.."leases"          ZSET  claimed items: member item id, score lease deadline (ms)
--   PREFIX.."lease"           HASH  claimed item id -> "token|worker|batch|rank|position"
--   PREFIX.."wake"            LIST  wake-up tokens that idle workers block on
--   PREFIX.."cancelled:"..b   STRING present while batch b is cancelled (expires)
--   PREFIX.."epoch"           STRING present unless Redis lost its data since the last reconcile
--   PREFIX.."reconcile-lock"  STRING the worker whose turn it is to reconcile (expires)
--   PREFIX.."reconciled"      HASH  the last reconcile pass: drift, requeued, at_ms (fleet gauges)
--   PREFIX.."budget:"..name   HASH  a fleet-wide token bucket: tokens, at (budget.lua)
--   PREFIX.."breaker:"..name  HASH  a fleet-wide circuit breaker: failures, open_until, probe_until
-- Pub/sub channels (not keys): PREFIX.."events" (cancel notices, to workers) and
-- PREFIX.."progress" (batch ids whose items changed state, to API processes).
-- Invariant: a batch id is in its rotation list exactly when its "q:" set is non-empty.
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

-- Makes `item` ready in its batch, or delayed until `due` (ms), unless its batch is cancelled
-- or someone holds a lease on it (the holder settles it). Returns 1 if placed, 2 if placed
-- ready, 0 if skipped.
local function place(prefix, leases, delayed, dref, item, batch, rank, pos, due, now)
  if redis.call('EXISTS', prefix .. 'cancelled:' .. batch) == 1 then
    return 0
  end
  if redis.call('ZSCORE', leases, item) then
    return 0
  end
  local q = prefix .. 'q:' .. batch
  if due > now then
    redis.call('ZREM', q, item)
    redis.call('ZADD', delayed, due, item)
    redis.call('HSET', dref, item, batch .. '|' .. rank .. '|' .. pos)
    return 1
  end
  redis.call('ZREM', delayed, item)
  redis.call('HDEL', dref, item)
  if redis.call('EXISTS', q) == 0 then
    redis.call('RPUSH', prefix .. 'rr:' .. rank, batch)
  end
  redis.call('ZADD', q, pos, item)
  return 2
end

-- Wakes idle workers: at most `limit` tokens wait in the list.
local function wake(key, n, limit)
  if n <= 0 then
    return
  end
  local have = redis.call('LLEN', key)
  for _ = 1, math.min(n, limit - have) do
    redis.call('LPUSH', key, 1)
  end
end
