-- The tenant API's rate limit, GCRA, evaluated atomically in Redis on Redis' own clock.
-- The same arithmetic as chom-core's ratelimit.rs (`Gcra::check`); a test runs both on the
-- same request times and compares every decision, so change them together.
--
-- KEYS[1]  the tenant's TAT key (chom:rl:<tenant id>), microseconds since the Unix epoch
-- ARGV[1]  T, the emission interval in microseconds
-- ARGV[2]  the quota (the burst: tolerance = quota * T)
-- ARGV[3]  only in tests: "now" in microseconds instead of Redis' TIME
-- Returns {allowed (1|0), the TAT stored afterwards, now}. Lua numbers are doubles, exact
-- for integers up to 2^53: microseconds since 1970 stay below that until the year 2255.
local interval = tonumber(ARGV[1])
local quota = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local stored = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local tat = math.max(stored, now)
local next_tat = tat + interval
if next_tat - now <= interval * quota then
  -- The key lives exactly as long as it limits: once the TAT has passed, a missing key
  -- means the same (a full budget).
  redis.call('SET', KEYS[1], string.format('%d', next_tat),
    'PX', math.ceil((next_tat - now) / 1000))
  return {1, next_tat, now}
end
return {0, stored, now}
