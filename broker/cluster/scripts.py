"""Lua scripts run atomically on Redis: registration claim and release, history publish.

Every key a script touches, and the channel it publishes on, share one hash tag (one
slot on a Redis Cluster: ``keys``).

See protocol_spec/cluster.md, "Registration claims" and "Event history".
"""

from __future__ import annotations

from protocol_spec.cluster import VERSION

__all__ = ["CLAIM", "HISTORY_PUBLISH", "RELEASE"]

CLAIM = """
-- KEYS: 1 claim hash, 2 the node's regs hash, 3 the sequence counter
-- ARGV: 1 invoke, 2 candidate id, 3 callee field "{node}:{session}", 4 reclaim "1"/"0",
--       5 callee entry (msgpack map), 6 control channel, 7 node, 8 "{realm}\\31",
--       9 session id (decimal), 10 the publish command (PUBLISH, or SPUBLISH on a Redis Cluster)
local invoke = ARGV[1]
local current = redis.call('HGET', KEYS[1], 'invoke')
local id = redis.call('HGET', KEYS[1], 'id')
local seq = nil
if current then
  local mine = redis.call('HGET', KEYS[1], ARGV[3])
  if mine then
    if ARGV[4] ~= '1' then return {'exists', id, 0} end
    seq = tonumber(mine)
  elseif current == 'single' or invoke == 'single' then
    return {'exists', id, 0}
  elseif current ~= invoke then
    return {'conflict', current, 0}
  end
else
  id = ARGV[2]
  redis.call('HSET', KEYS[1], 'invoke', invoke, 'id', id)
end
if not seq then
  seq = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], ARGV[3], seq)
end
local entry = cmsgpack.unpack(ARGV[5])
entry['reg'] = tonumber(id)
entry['seq'] = seq
redis.call('HSET', KEYS[2], ARGV[8] .. id .. '\\31' .. ARGV[9], cmsgpack.pack(entry))
redis.call(ARGV[10], ARGV[6], cmsgpack.pack({v = @VERSION@, op = 'reg', n = ARGV[7], e = entry}))
return {'ok', id, seq}
""".replace("@VERSION@", str(VERSION))

RELEASE = """
-- KEYS: 1 claim hash, 2 the node's regs hash
-- ARGV: 1 callee field, 2 regs-hash field, 3 control channel, 4 control envelope,
--       5 the publish command (PUBLISH, or SPUBLISH on a Redis Cluster)
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HLEN', KEYS[1]) <= 2 then redis.call('DEL', KEYS[1]) end
  redis.call(ARGV[5], ARGV[3], ARGV[4])
end
return 1
"""

HISTORY_PUBLISH = """
-- KEYS: 1 the topic's history hash {o: last offset, e: epoch}, 2 the topic's stream
-- ARGV: 1 event channel, 2 packed EventEnvelope ending with o=nil, e=nil (6 bytes),
--       3 limit (MAXLEN ~), 4 stream ttl in seconds (0: none), 5 hash ttl (0: none),
--       6 the publish command (PUBLISH, or SPUBLISH on a Redis Cluster),
--       7 '1': return the envelope too (the node sends it on the realm's pattern channel)
local now = redis.call('TIME')
local us = now[1] .. string.format('%06d', tonumber(now[2]))
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
local epoch = nil
if off ~= 1 then epoch = redis.call('HGET', KEYS[1], 'e') end
if not epoch then
  -- a new history (first event, or Redis lost the hash): a new epoch, no old entries
  epoch = us
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local env = string.sub(ARGV[2], 1, -7) .. '\\161o' .. cmsgpack.pack(off)
  .. '\\161e' .. cmsgpack.pack(epoch)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '0-' .. off, 'u', us, 'ev', env)
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
if ARGV[5] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
redis.call(ARGV[6], ARGV[1], env)
if ARGV[7] == '1' then return {off, env} end
return off
"""
