"""The Lua scripts that keep the shared counters in Valkey/Redis (ratekeeper/shared.py).

Each script runs atomically in the server: a check and the count it guards are one step, so two
nodes racing for the last slot cannot both win. Times come from the server's TIME, one clock
for every node. Keys are built inside the scripts from a prefix (ARGV[1]), so this needs one
Valkey/Redis server (or a primary with replicas), not Redis Cluster's sharding.

Keys, under the prefix:
  nodes               set of node names that count connections
  conn:<node>         hash: "_node" (registered), "<service>" and "<service>\t<ip>" → sessions
                      open on that node; its TTL is the node's heartbeat (see shared.py)
  fail:<address>      sorted set of failures (score: time), expiring with the window
  block:<address>     hash of a block in force (since, until, and its failures, or a node's
                      summary of them), TTL its length
  sent:<sender>       sorted set of messages sent (score: time), expiring with the interval
  refusing:<sender>   present while the sender is refused: one report per event
  seq                 a counter that makes set members unique
"""

from __future__ import annotations

# The server's time in seconds, for the scripts that keep windows.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
"""

# ARGV: prefix, node, service, ip, blocked address key, max_total, max_per_ip, node TTL
# → "blocked" | "service_full" | "ip_full" | "ok" | "unregistered" (this node's hash is gone:
# the server restarted or the node was away past its TTL; register, then ask again).
OPEN = """
local prefix, node, service, ip = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local own = prefix .. 'conn:' .. node
if redis.call('HEXISTS', own, '_node') == 0 then return 'unregistered' end
if redis.call('EXISTS', prefix .. 'block:' .. ARGV[5]) == 1 then return 'blocked' end
local max_total, max_per_ip = tonumber(ARGV[6]), tonumber(ARGV[7])
local per_ip_field = service .. '\\t' .. ip
local total, per_ip = 0, 0
for _, name in ipairs(redis.call('SMEMBERS', prefix .. 'nodes')) do
  local counts = redis.call('HMGET', prefix .. 'conn:' .. name, '_node', service, per_ip_field)
  if counts[1] then
    total = total + (tonumber(counts[2]) or 0)
    per_ip = per_ip + (tonumber(counts[3]) or 0)
  else
    redis.call('SREM', prefix .. 'nodes', name)  -- its hash expired: that node is gone
  end
end
if max_total > 0 and total >= max_total then return 'service_full' end
if max_per_ip > 0 and per_ip >= max_per_ip then return 'ip_full' end
redis.call('HINCRBY', own, service, 1)
redis.call('HINCRBY', own, per_ip_field, 1)
return 'ok'
"""

# ARGV: prefix, node, service, ip, sessions to release → 1, or 0 when the node is unregistered
# (its counts went with its hash; registering writes them afresh).
CLOSE = """
local own = ARGV[1] .. 'conn:' .. ARGV[2]
if redis.call('HEXISTS', own, '_node') == 0 then return 0 end
local count = tonumber(ARGV[5])
for _, field in ipairs({ARGV[3], ARGV[3] .. '\\t' .. ARGV[4]}) do
  if redis.call('HINCRBY', own, field, -count) <= 0 then redis.call('HDEL', own, field) end
end
return 1
"""

# ARGV: prefix, node, node TTL, then field, count pairs: this node's sessions, replacing
# whatever its hash held.
REGISTER = """
local own = ARGV[1] .. 'conn:' .. ARGV[2]
redis.call('DEL', own)
redis.call('HSET', own, '_node', 1)
for i = 4, #ARGV, 2 do redis.call('HSET', own, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', own, ARGV[3])
redis.call('SADD', ARGV[1] .. 'nodes', ARGV[2])
return 1
"""

# ARGV: prefix, address key, window, saturation, block_after, block_time, service, what
# → {failures in the window, seconds blocked (a string: Lua numbers reach us as integers),
#    1 when this failure imposed the block}. As FailureCounters.record, over all nodes.
FAIL = NOW + """
local fkey, bkey = ARGV[1] .. 'fail:' .. ARGV[2], ARGV[1] .. 'block:' .. ARGV[2]
local window, saturation = tonumber(ARGV[3]), tonumber(ARGV[4])
local block_after, block_time = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', fkey, '-inf', now - window)
local seq = redis.call('INCR', ARGV[1] .. 'seq')
redis.call('ZADD', fkey, now, seq .. '\\t' .. ARGV[7] .. '\\t' .. ARGV[8])
local count = redis.call('ZCARD', fkey)
if count > saturation then
  redis.call('ZREMRANGEBYRANK', fkey, 0, count - saturation - 1)  -- older ones change nothing
  count = saturation
end
redis.call('PEXPIRE', fkey, math.ceil(window * 1000))
local left = redis.call('PTTL', bkey)
if left > 0 then return {count, tostring(left / 1000), 0} end
if block_after > 0 and count >= block_after then
  local failures = redis.call('ZRANGE', fkey, 0, -1)
  redis.call('DEL', fkey)  -- the block is the penalty; afterwards the address starts afresh
  redis.call('HSET', bkey, 'since', tostring(now), 'until', tostring(now + block_time),
             'window', tostring(window), 'failures', table.concat(failures, '\\n'))
  redis.call('PEXPIRE', bkey, math.ceil(block_time * 1000))
  return {count, tostring(block_time), 1}
end
return {count, '0', 0}
"""

# ARGV: prefix, address key, seconds left, failures, services (comma-separated), why → 1
# when written: a block this node imposed while the server was away, unless one is in force.
ADD_BLOCK = NOW + """
local bkey = ARGV[1] .. 'block:' .. ARGV[2]
if redis.call('EXISTS', bkey) == 1 then return 0 end
redis.call('HSET', bkey, 'since', tostring(now), 'until', tostring(now + tonumber(ARGV[3])),
           'count', ARGV[4], 'services', ARGV[5], 'why', ARGV[6])
redis.call('PEXPIRE', bkey, math.ceil(tonumber(ARGV[3]) * 1000))
return 1
"""

# ARGV: prefix, sender, messages, interval, commit ("1"/"0") → {allowed, new_event}, as
# SendCounters.take over all nodes.
SEND = NOW + """
local skey, rkey = ARGV[1] .. 'sent:' .. ARGV[2], ARGV[1] .. 'refusing:' .. ARGV[2]
local messages, interval = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', skey, '-inf', now - interval)
if redis.call('ZCARD', skey) >= messages then
  local new_event = redis.call('SET', rkey, 1, 'NX', 'PX', math.ceil(interval * 1000))
  return {0, new_event and 1 or 0}
end
redis.call('DEL', rkey)
if ARGV[5] == '1' then
  redis.call('ZADD', skey, now, redis.call('INCR', ARGV[1] .. 'seq'))
  redis.call('PEXPIRE', skey, math.ceil(interval * 1000))
end
return {1, 0}
"""
