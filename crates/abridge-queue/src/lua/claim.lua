-- claim: lease up to N ready items to one worker, strictly by priority; within a priority,
-- shared out across owners (tenants) in turns by weight, then round-robin across each owner's
-- batches, and in position order within a batch. Promotes due retries first.
--
-- KEYS[1..3] rotation lists of owners for ranks 0 (high), 1 (normal), 2 (low)
-- KEYS[4] lease deadlines (ZSET item -> deadline ms)
-- KEYS[5] lease holders (HASH item -> "token|worker|batch|rank|position")
-- KEYS[6] delayed (ZSET item -> due ms)
-- KEYS[7] delayed places (HASH delayed item -> "batch|rank|position")
-- KEYS[8] epoch marker
-- KEYS[9] paused marker: while present, nothing is claimed (due retries are still promoted)
-- KEYS[10] wake list, to pass a wake-up on (first shard only; left out elsewhere: the caller
--          passes it on)
-- ARGV[1] PREFIX, for per-batch keys
-- ARGV[2] worker id
-- ARGV[3] lease token for this claim (shared by the items it returns)
-- ARGV[4] lease duration ms
-- ARGV[5] N, the most items to claim
-- ARGV[6] the lowest priority rank to take items of (2: any; a claim over several shards
--         takes the most urgent work of every shard before less urgent work of any)
-- Returns { epoch_present (0|1), ms until the next delayed item is due (-1: none),
--           the highest priority rank with items left ready (3: none),
--           then groups of 4: item, batch, rank, position }.

local prefix, worker, token = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, max_n, max_rank = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
-- Items an owner gives per turn (when the waiting owners' weights differ, the heaviest's).
local QUANTUM = 32
-- The fewest items a visit to one of an owner's batches takes (while the turn has room).
local BATCH_SHARE = 8
local OWNER_TTL_S = 2592000
local now = now_ms()

-- Promote retries that are due.
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 1000)
for _, item in ipairs(due) do
  local ref = redis.call('HGET', KEYS[7], item)
  redis.call('ZREM', KEYS[6], item)
  redis.call('HDEL', KEYS[7], item)
  if ref then
    local f = split(ref)
    place(prefix, KEYS[4], KEYS[6], KEYS[7], item, f[1], f[2], f[3], 0, now)
  end
end

-- The most urgent rank with work ready here (3: none).
local function top_rank()
  for rank = 0, 2 do
    if redis.call('LLEN', KEYS[1 + rank]) > 0 then
      return rank
    end
  end
  return 3
end

local out = { redis.call('EXISTS', KEYS[8]), -1, 3 }
if redis.call('EXISTS', KEYS[9]) == 1 then
  -- Paused: nothing is taken, but the top rank left stays true (a resume publishes nothing,
  -- and a loop that took this shard for empty would not ask it for urgent work).
  out[3] = top_rank()
  return out
end
local n = 0
local deadline = now + lease_ms
local zargs, hargs = {}, {}
-- Pops up to `want` items from `batch` at `rank` and leases them; returns how many.
local function take(rank, owner, list, batch, want)
  local q = prefix .. 'q:' .. batch
  local popped = redis.call('ZPOPMIN', q, want)
  -- A batch being worked keeps its owner record, however long it runs.
  redis.call('EXPIRE', prefix .. 'owner:' .. batch, OWNER_TTL_S)
  if redis.call('EXISTS', q) == 0 then
    rotate_out(prefix, rank, batch, owner)
  end
  -- An item can be listed while leased (the reconciler re-added it): skip the copy. The
  -- popped items' leases are looked up in one call.
  local members = {}
  for i = 1, #popped, 2 do
    members[#members + 1] = popped[i]
  end
  local leased = call_gathered('ZMSCORE', KEYS[4], members)
  local got = 0
  for j = 1, #members do
    local item, pos = members[j], popped[2 * j]
    if not leased[j] then
      zargs[#zargs + 1] = deadline
      zargs[#zargs + 1] = item
      hargs[#hargs + 1] = item
      hargs[#hargs + 1] = token .. '|' .. worker .. '|' .. batch .. '|' .. rank .. '|' .. pos
      out[#out + 1] = item
      out[#out + 1] = batch
      out[#out + 1] = rank
      out[#out + 1] = pos
      got = got + 1
    end
  end
  return got
end

-- Takes up to `want` items from `owner`'s batches at `rank`, an equal share from each in turn,
-- and at least BATCH_SHARE from one (an owner with many batches and little room gives a few of
-- them a visit, and the rotation carries the visits on to its next turn).
local function take_from_owner(rank, owner, want)
  local list = prefix .. 'batches:' .. rank .. ':' .. owner
  local got = 0
  while got < want do
    local batches = redis.call('LLEN', list)
    if batches == 0 then
      -- An owner with no batch left has no turn (a partial loss can leave one behind).
      redis.call('LREM', prefix .. 'owners:' .. rank, 0, owner)
      break
    end
    local share = math.max(math.ceil((want - got) / batches), BATCH_SHARE)
    for _ = 1, batches do
      if got >= want then
        break
      end
      local batch = redis.call('LMOVE', list, list, 'LEFT', 'RIGHT')
      got = got + take(rank, owner, list, batch, math.min(share, want - got))
    end
  end
  return got
end

-- Owners take turns (deficit round-robin): the owner at the head of the rank's rotation gives
-- its turn's items, then goes to the back. A turn that a claim filled up before its end goes
-- on in the next claim (the rank's "turn" hash keeps what is left of it), so weights hold
-- however small the claims are, and a turn's cost is spread over its items.
-- A turn is QUANTUM items when every waiting owner weighs the same. Otherwise the heaviest
-- owner's turn is QUANTUM, or its weight over the lightest's when that is more, and the
-- others' are in proportion (at least 1 item): weights of 1000 and 1 give turns of 1000 and
-- 1, so the light owner never waits for more than the heavy one's share of one item.
local weighted = redis.call('HLEN', prefix .. 'weights') > 0
local capped = redis.call('HLEN', prefix .. 'caps') > 0
for rank = 0, max_rank do
  if n >= max_n then
    break
  end
  local rr = KEYS[1 + rank]
  -- Each waiting owner's turn, when their weights differ (nil: QUANTUM for everyone).
  local turns = nil
  if weighted then
    local names = redis.call('LRANGE', rr, 0, -1)
    if #names > 0 then
      local ws = call_gathered('HMGET', prefix .. 'weights', names)
      local lo, hi = math.huge, 0
      for i = 1, #ws do
        ws[i] = tonumber(ws[i]) or 1
        lo, hi = math.min(lo, ws[i]), math.max(hi, ws[i])
      end
      if hi > lo then
        local top = math.max(QUANTUM, math.ceil(hi / lo))
        turns = {}
        for i = 1, #names do
          turns[names[i]] = math.max(1, math.floor(top * ws[i] / hi + 0.5))
        end
      end
    end
  end
  local turn_key = prefix .. 'turn:' .. rank
  -- The kept turn, read when the rank has an owner to serve.
  local saved = nil
  -- Whether the kept turn is used up or stale by the end of this claim.
  local drop = false
  -- Owners in a row whose turn gave nothing (at their cap, or out of items but still listed).
  local idle = 0
  while n < max_n do
    local owners = redis.call('LLEN', rr)
    if owners == 0 or idle >= owners then
      break
    end
    local owner = redis.call('LINDEX', rr, 0)
    saved = saved or redis.call('HMGET', turn_key, 'owner', 'left')
    if saved[1] then
      drop = true
    end
    local turn = turns and turns[owner] or QUANTUM
    -- A kept turn is held to the owner's turn now: an operator's lower weight applies at once.
    local left = saved[1] == owner and math.min(tonumber(saved[2]), turn) or turn
    saved = {}
    -- An owner alone at this rank need not stop for anyone: its turn runs to the claim's end.
    local ask = owners == 1 and max_n - n or math.min(left, max_n - n)
    local limit = capped and room(prefix, owner, now)
    if limit then
      ask = math.min(ask, limit)
    end
    local got = 0
    if ask > 0 then
      local first = #out + 1
      got = take_from_owner(rank, owner, ask)
      n = n + got
      if limit then
        local key = prefix .. 'inflight:' .. owner
        for j = first, #out, 4 do
          redis.call('ZADD', key, deadline, out[j])
        end
      end
    end
    left = left - got
    -- An owner that ran out of items has left the rotation already.
    local listed = redis.call('LINDEX', rr, 0) == owner
    if listed and n >= max_n and got == ask and left > 0 then
      -- The claim is full in the middle of the turn: the next claim goes on with it.
      redis.call('HSET', turn_key, 'owner', owner, 'left', left)
      drop = false
      break
    end
    -- The turn is over: the owner gave its turn, ran out at this rank, or is at its cap.
    if got > 0 then
      idle = 0
    elseif listed then
      idle = idle + 1
    end
    if listed then
      redis.call('LMOVE', rr, rr, 'LEFT', 'RIGHT')
    end
  end
  if drop then
    redis.call('DEL', turn_key)
  end
end
if n > 0 then
  call_chunked('ZADD', KEYS[4], zargs, 2)
  call_chunked('HSET', KEYS[5], hargs, 2)
end
out[3] = top_rank()
-- This worker took all it could carry and work is left: pass the wake-up on to the next one.
if n >= max_n and out[3] < 3 then
  wake(KEYS[10], 1, 1)
end
local next_due = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
if next_due[2] then
  out[2] = math.max(0, tonumber(next_due[2]) - now)
end
return out
