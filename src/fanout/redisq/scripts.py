"""The Lua scripts of the Redis queue: each step that must be atomic is one script.

Every key a script touches is under the queue's hash tag, so on one node of
a cluster too; the per-host keys (slots, rates, cool-downs) are built in the
script from the queue's prefix and the host. Redis runs a script whole or not at
all, and with AOF persistence a script's writes are logged as one unit.
"""

from __future__ import annotations

from typing import Final

# KEYS: requests, order, stream. ARGV: key1, payload1, key2, payload2...
# A key already known to the queue (from any earlier submit) is not added again.
SUBMIT: Final = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i])
    redis.call('XADD', KEYS[3], '*', 'k', ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: stream, deliveries, requests. ARGV: group, consumer, count, min_idle_ms.
# First the entries other workers took and left idle for min_idle_ms (a dead
# worker's: XAUTOCLAIM), then new ones (XREADGROUP), each with its request and
# how many times it has now been handed out.
TAKE: Final = """
local count = tonumber(ARGV[3])
local taken = {}
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0',
                           'COUNT', count)
for _, entry in ipairs(claimed[2]) do
  if entry and entry[1] then table.insert(taken, entry) end
end
if #taken < count then
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT',
                          count - #taken, 'STREAMS', KEYS[1], '>')
  if read then
    for _, entry in ipairs(read[1][2]) do table.insert(taken, entry) end
  end
end
local out = {}
for _, entry in ipairs(taken) do
  local key = entry[2][2]
  local delivered = redis.call('HINCRBY', KEYS[2], key, 1)
  local payload = redis.call('HGET', KEYS[3], key)
  table.insert(out, {entry[1], key, payload or '', delivered})
end
return out
"""

# KEYS: results, failed, kinds, stream, deliveries. ARGV: group, the queue's
# key prefix, then (entry id, key, record, error kind or '', host or '',
# cool-down ms) for each result.
# The first result of a key is kept (HSETNX); a later one (a reclaimed request
# that its first worker finished too) is dropped. Either way the entry is
# acknowledged and deleted, so the stream holds only work not yet done, and
# its host slot is released (see fanout.redisq.politeness); a 429 or 503's
# Retry-After becomes the host's cool-down for every worker.
COMMIT: Final = """
local kept = 0
local group, prefix = ARGV[1], ARGV[2]
for i = 3, #ARGV, 6 do
  local id, key, record, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local host, cool = ARGV[i + 4], tonumber(ARGV[i + 5])
  if redis.call('HSETNX', KEYS[1], key, record) == 1 then
    kept = kept + 1
    if kind ~= '' then
      redis.call('HSET', KEYS[2], key, kind)
      redis.call('HINCRBY', KEYS[3], kind, 1)
    end
    redis.call('HDEL', KEYS[5], key)
  end
  redis.call('XACK', KEYS[4], group, id)
  redis.call('XDEL', KEYS[4], id)
  if host ~= '' then
    redis.call('ZREM', prefix .. 'slots:' .. host, id)
    local cool_key = prefix .. 'cool:' .. host
    if cool > 0 and redis.call('PTTL', cool_key) < cool then
      redis.call('SET', cool_key, '1', 'PX', cool)
    end
  end
end
return kept
"""

# KEYS: workers, stream. ARGV: group, consumer, ids of the entries it holds...
# The worker is alive (its score: Redis's clock, in ms), and so are its
# entries: XCLAIM to itself resets their idle time, so a slow request is not
# reclaimed from a live worker. JUSTID: no delivery is counted.
HEARTBEAT: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[2])
if #ARGV > 2 then
  redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[2], 0, unpack(ARGV, 3, #ARGV), 'JUSTID')
end
return ms
"""

# KEYS: stream, deliveries. ARGV: group, consumer, the queue's key prefix,
# then (entry id, key, host or '') of each entry a stopping worker gives back:
# made idle for 10 years (not more: an idle time past the epoch becomes 0), so
# the next worker's XAUTOCLAIM takes it at once, with this delivery not
# counted, and its host slot freed.
HAND_BACK: Final = """
for i = 4, #ARGV, 3 do
  local id, key, host = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id,
                             'IDLE', 315360000000, 'JUSTID')
  if #claimed > 0 and tonumber(redis.call('HGET', KEYS[2], key) or '0') > 0 then
    redis.call('HINCRBY', KEYS[2], key, -1)
  end
  if host ~= '' then redis.call('ZREM', ARGV[3] .. 'slots:' .. host, id) end
end
return 1
"""

# KEYS: failed, results, kinds, deliveries, stream. ARGV: keys to fetch again.
# A key that failed loses its result and goes back on the stream.
RETRY: Final = """
local again = 0
for i = 1, #ARGV do
  local kind = redis.call('HGET', KEYS[1], ARGV[i])
  if kind then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HINCRBY', KEYS[3], kind, -1)
    redis.call('HDEL', KEYS[4], ARGV[i])
    redis.call('XADD', KEYS[5], '*', 'k', ARGV[i])
    again = again + 1
  end
end
return again
"""

# KEYS: workers. ARGV: alive_ms. The workers heard from within alive_ms, by
# Redis's clock (the workers' clocks may disagree).
ALIVE: Final = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], ms - tonumber(ARGV[1]), '+inf')
"""
