-- Cluster-wide bulkhead slots of one server: the script behind actors/src/fleet/slots.rs,
-- the model in core/src/lease.rs (SlotTable), which a differential test holds it to.
-- KEYS[1]: the server's table, a sorted set: member = holder, score = expiry (ms).
-- ARGV[1]: 'acquire' | 'renew' | 'release'
-- ARGV[2]: the holder (`<instance>:<n>`)
-- ARGV[3]: slots on the server (acquire)
-- ARGV[4]: the lease's time to live, ms (acquire, renew)
-- ARGV[5]: now, ms; empty means the Redis server's clock, the one clock every node shares
--          (tests pass their own).
-- Answers: acquire: 0 when granted, else the ms until the earliest lease lapses (> 0);
-- renew: 1 when the lease was still held, else 0; release: 1 when it was held, else 0.
local key, op, member = KEYS[1], ARGV[1], ARGV[2]
if op == 'release' then
  return redis.call('ZREM', key, member)
end
local now = tonumber(ARGV[5])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local held = redis.call('ZSCORE', key, member)
if op == 'renew' then
  if not held then
    return 0
  end
elseif not held and redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(first[2]) - now
end
redis.call('ZADD', key, now + ttl, member)
-- The table lives as long as its longest lease, so a removed server leaves nothing behind.
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
if op == 'renew' then
  return 1
end
return 0
