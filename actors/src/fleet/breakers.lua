-- The breakers the nodes share: the script behind actors/src/fleet/breaker_sync.rs.
-- KEYS[1]: sorted set, server -> the sequence number of its last publication
-- KEYS[2]: the sequence counter
-- KEYS[3]: the prefix of the record keys: KEYS[3] .. server holds the server's last published
--          record (JSON: who and the breaker's snapshot), kept a day like breaker snapshots.
--          (Record keys are built here, so this script is for a single Redis, not a cluster.)
-- ARGV[1] = 'publish', ARGV[2] = server, ARGV[3] = record, ARGV[4] = its ttl in seconds:
--   stores it under the next sequence number; answers {seq}.
-- ARGV[1] = 'get', ARGV[2] = server: answers {record}, or {} when none is kept.
-- ARGV[1] = 'since', ARGV[2] = the last sequence number seen, ARGV[3] = at most this many:
--   answers {cursor, server, record, server, record, ...}, the servers published after the
--   last seen, in sequence order; the cursor is what to ask from next time. A counter below
--   the last seen means Redis lost its data: everything kept is sent again. Entries whose
--   record has lapsed are dropped from the set on the way.
local op = ARGV[1]
if op == 'publish' then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[3] .. ARGV[2], ARGV[3], 'EX', tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[1], seq, ARGV[2])
  return {tostring(seq)}
end
if op == 'get' then
  local record = redis.call('GET', KEYS[3] .. ARGV[2])
  if record then
    return {record}
  end
  return {}
end
local last = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur < last then
  last = 0
end
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. last, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
local out = {tostring(cur)}
if #rows / 2 >= limit then
  out[1] = rows[#rows]
end
for i = 1, #rows, 2 do
  local record = redis.call('GET', KEYS[3] .. rows[i])
  if record then
    table.insert(out, rows[i])
    table.insert(out, record)
  else
    redis.call('ZREM', KEYS[1], rows[i])
  end
end
return out
