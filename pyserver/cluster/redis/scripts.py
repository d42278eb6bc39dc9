"""The Lua scripts that make each cluster transition atomic in Redis, and how to call them.

Data model (every key starts with the configured prefix `P`; names are made in `keys.py`).
Braces are literal: they are Redis Cluster hash tags, so all keys of an app (`{a}`) share
a hash slot, and so do all keys of a node (`{n}`); `c` is a channel, `u` a user id.

- `P:subs:{a}:c` (hash): node id → that node's subscriptions to the channel.
- `P:channels:{a}` (set): occupied channels, whose total subscriptions are above 0.
- `P:pconns:{a}:c` (hash): `node|socket` → user id, per presence connection.
- `P:pmembers:{a}:c` (hash): user id → `user_info` JSON, the first one kept.
- `P:users:{a}:u` (hash): `node|socket` → "1", per signed-in connection.
- `P:pending:channel:{a}:c`, `P:pending:member:{a}:c:u`, `P:pending:user:{a}:u` (strings
  with a TTL): pending leaves (`pyserver.cluster.leaves`).
- `P:cache:{a}:c` (string with a TTL): a cache channel's last event.
- `P:index:{a}:n` (set): the keys of app `a` that node `n` has fields in, as JSON entries
  `[kind, app, channel or user]`; `P:apps:{n}` (set): the apps node `n` has an index for.
- `P:nodes` (set), `P:alive:{n}` (string with a TTL), `P:conns:{n}`, `P:leaving:{n}`,
  `P:reaping:{n}`: cluster membership, heartbeats, connection counts, the leaves a node's
  timers hold, and the claim of whoever is removing `n`'s state.

Every script that adds a node's field also records the key in that node's index of the app
(same slot); reaping a dead node replays its indexes through the `REAP_*` scripts, and so
does a node rebuilding its own state after an outage (then writing its local state back in
the same transaction).

Invariant: a script touches only keys it is given in KEYS (never a name built from ARGV or
read from data), as Redis Cluster requires.
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript

from pyserver.cluster.redis_connect import Client, queue_script

COUNT = """
-- KEYS: subs, channels, pending, index; ARGV: node, channel, delta, pending_ttl_ms, entry
local mine = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if mine <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[4], ARGV[5])
else
  redis.call('SADD', KEYS[4], ARGV[5])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
local transition = 'none'
if tonumber(ARGV[3]) > 0 and total == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  if redis.call('DEL', KEYS[3]) == 1 then transition = 'returned' else transition = 'arrived' end
elseif tonumber(ARGV[3]) < 0 and total == 0 then
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[4])
  transition = 'left'
end
return {total, transition}
"""

SET_COUNT = """
-- KEYS: subs, channels, index; ARGV: node, channel, count, entry  (re-publishing after an outage)
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[4])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""

PRESENCE_JOIN = """
-- KEYS: pconns, pmembers, pending, index; ARGV: field, user, user_info_json, entry
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
local n = 0
for _, u in ipairs(redis.call('HVALS', KEYS[1])) do if u == ARGV[2] then n = n + 1 end end
local transition = 'none'
if n == 1 then
  redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[3])
  if redis.call('DEL', KEYS[3]) == 1 then transition = 'returned' else transition = 'arrived' end
end
return {transition, redis.call('HGETALL', KEYS[2])}
"""

PRESENCE_LEAVE = """
-- KEYS: pconns, pmembers, pending; ARGV: field, user, pending_ttl_ms
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, u in ipairs(redis.call('HVALS', KEYS[1])) do if u == ARGV[2] then return 0 end end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return 1
"""

USER_JOIN = """
-- KEYS: users, pending, index; ARGV: field, entry
redis.call('HSET', KEYS[1], ARGV[1], '1')
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('HLEN', KEYS[1]) > 1 then return 'none' end
if redis.call('DEL', KEYS[2]) == 1 then return 'returned' end
return 'arrived'
"""

USER_LEAVE = """
-- KEYS: users, pending; ARGV: field, pending_ttl_ms
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) > 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
"""

REAP_COUNT = """
-- KEYS: subs, channels, pending; ARGV: node, channel, pending_ttl_ms
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[1]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return 1
"""

REAP_PRESENCE = """
-- KEYS: pconns, pmembers, pending of user 1..n; ARGV: node_prefix ('{node}|'),
-- pending_ttl_ms, user 1..n. The users are those the caller read in the node's fields just
-- before (the node is dead, or it is this node rebuilding with its calls held), so every
-- user removed here has its pending key in KEYS; one that has not is returned but not
-- marked, and the caller marks it.
local pending = {}
for i = 3, #ARGV do pending[ARGV[i]] = KEYS[i] end
local gone = {}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], fields[i])
    gone[fields[i + 1]] = true
  end
end
for _, u in ipairs(redis.call('HVALS', KEYS[1])) do gone[u] = nil end
local removed = {}
for u, _ in pairs(gone) do
  redis.call('HDEL', KEYS[2], u)
  if pending[u] then redis.call('SET', pending[u], '1', 'PX', ARGV[2]) end
  table.insert(removed, u)
end
return removed
"""

REAP_USER = """
-- KEYS: users, pending; ARGV: node_prefix, pending_ttl_ms
local had = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, #ARGV[1]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], f)
    had = 1
  end
end
if had == 1 and redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
"""

CLAIM_DEAD = """
-- KEYS: alive, reaping; ARGV: claimant, lock_ms  (1 when the node is dead and now ours to reap)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


NAMES = (
    "COUNT",
    "SET_COUNT",
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "USER_JOIN",
    "USER_LEAVE",
    "REAP_COUNT",
    "REAP_PRESENCE",
    "REAP_USER",
    "CLAIM_DEAD",
)


class Scripts:
    """The scripts registered on one client: `await scripts.call(name, keys, args)`, or
    `scripts.queue(pipe, ...)` inside a pipeline."""

    def __init__(self, client: Client) -> None:
        self._registered: dict[str, AsyncScript] = {
            name: client.register_script(globals()[name]) for name in NAMES
        }

    async def call(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        return await self._registered[name](keys=keys, args=args)

    def queue(self, pipe: Any, name: str, keys: list[Any], args: list[Any]) -> None:
        """Queue a call on a pipeline (`redis_connect.queue_script`: EVALSHA with the
        missing scripts loaded first, or EVAL on a cluster)."""
        queue_script(pipe, self._registered[name], keys, args)
