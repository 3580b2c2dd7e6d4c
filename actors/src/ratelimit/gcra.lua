-- The tenant API's rate limit, GCRA, evaluated atomically in Redis on Redis' own clock, for
-- one or more requests at once (a node sends the checks that arrived while its previous call
-- was in flight together: one round trip for many). The same arithmetic as chom-core's
-- ratelimit.rs (`Gcra::check`); a test runs both on the same request times and compares every
-- decision, so change them together.
--
-- KEYS[i]      request i's tenant TAT key (chom:rl:<tenant id>), microseconds since the epoch;
--              one tenant may appear more than once (decided in order)
-- ARGV[2i-1]   request i's T, the emission interval in microseconds
-- ARGV[2i]     request i's quota (the burst: tolerance = quota * T)
-- ARGV[2n+1]   only in tests: "now" in microseconds instead of Redis' TIME
-- Returns, per request, {allowed (1|0), the TAT stored afterwards, now}, flattened. Lua
-- numbers are doubles, exact for integers up to 2^53: microseconds since 1970 stay below that
-- until the year 2255.
local n = #KEYS
local now
if ARGV[2 * n + 1] then
  now = tonumber(ARGV[2 * n + 1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
-- Each tenant's TAT is read once and written once per call, however many of its checks the
-- call holds (a burst from one tenant is the common batch): the same decisions as checking
-- them one by one, for a fraction of Redis' work.
local tats, dirty, order = {}, {}, {}
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local interval = tonumber(ARGV[2 * i - 1])
  local quota = tonumber(ARGV[2 * i])
  local stored = tats[key]
  if stored == nil then
    stored = tonumber(redis.call('GET', key) or '0') or 0
    order[#order + 1] = key
  end
  local tat = math.max(stored, now)
  local next_tat = tat + interval
  if next_tat - now <= interval * quota then
    tats[key] = next_tat
    dirty[key] = true
    out[#out + 1] = 1
    out[#out + 1] = next_tat
  else
    tats[key] = stored
    out[#out + 1] = 0
    out[#out + 1] = stored
  end
  out[#out + 1] = now
end
-- A key lives exactly as long as it limits: once the TAT has passed, a missing key means the
-- same (a full budget).
for _, key in ipairs(order) do
  if dirty[key] then
    redis.call('SET', key, string.format('%d', tats[key]),
      'PX', math.ceil((tats[key] - now) / 1000))
  end
end
return out
