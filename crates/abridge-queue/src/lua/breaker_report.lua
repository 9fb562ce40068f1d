-- breaker_report: records how a request to a backend went. A success closes the breaker; a
-- failure that means the backend is down counts, and `threshold` of them in a row (each within
-- `decay_ms` of the last) open it for `open_ms` (a failed half-open probe re-opens it at once).
--
-- KEYS[1] the breaker (HASH: failures, open_until, probe_until)
-- ARGV[1] 1 for a success, 0 for a failure
-- ARGV[2] threshold: consecutive failures that open the breaker
-- ARGV[3] open_ms: how long it stays open
-- ARGV[4] decay_ms: failures older than this are forgotten
-- Returns 1 if this call opened the breaker, else 0.

if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  return 0
end
local now = now_ms()
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local open_ms = tonumber(ARGV[3])
local opened = 0
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'open_until', tostring(now + open_ms), 'probe_until', '0')
  opened = 1
end
redis.call('PEXPIRE', KEYS[1], math.max(open_ms * 2, tonumber(ARGV[4])))
return opened
