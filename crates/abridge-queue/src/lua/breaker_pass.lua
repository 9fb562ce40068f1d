-- breaker_pass: may a caller send a request to a backend now? A fleet-wide circuit breaker:
-- closed (go ahead), open (wait until `open_until`), or half-open once that time has passed,
-- when one caller at a time may probe the backend (for `probe_ms`) while the others wait.
--
-- KEYS[1] the breaker (HASH: failures, open_until ms, probe_until ms; absent = closed)
-- ARGV[1] probe_ms: how long one probe holds the half-open breaker
-- Returns 0 to go ahead, else the milliseconds to wait before asking again.

local now = now_ms()
local state = redis.call('HMGET', KEYS[1], 'open_until', 'probe_until')
local open_until = tonumber(state[1]) or 0
if open_until == 0 then
  return 0
end
if now < open_until then
  return open_until - now
end
local probe_until = tonumber(state[2]) or 0
if now < probe_until then
  return probe_until - now
end
redis.call('HSET', KEYS[1], 'probe_until', tostring(now + tonumber(ARGV[1])))
return 0
