"""The shared webhook queue's data in Redis, and the Lua scripts that change it.

Data model (`T` = `{prefix:webhooks}`; the braces are a Redis Cluster hash tag, so every key
below lives in one slot and each script touches one slot):

| key | type | holds |
|---|---|---|
| `T:records` | hash | id -> the delivery (`Delivery.to_record`), never changed once written |
| `T:due` | sorted set | id -> when it may be claimed next (Redis time, ms): see below |
| `T:tries` | hash | id -> attempts claimed so far |
| `T:owners` | hash | id -> fencing token of its latest claim |
| `T:fence` | string | the last fencing token handed out (a counter) |

A delivery's `T:due` score is the time of its next attempt, or, while a node is sending it,
the end of that node's lease.

Invariants:
- Every record is in `T:due` exactly once, so `ZCARD T:due` is the queue's depth.
- Time is Redis's own (`TIME`), never a node's clock: leases and retry times mean the same
  to every node.
- `claim` takes only ids whose score has passed, and moves each to `now + lease` with a new,
  larger token in the same script: two claimers never hold one delivery at the same time,
  and a claimer that dies simply lets its lease run out, after which another claims it.
- `reschedule`, `drop` and `release` change a delivery only for the holder of its current
  token (fencing): a late report from a node whose lease ran out cannot move or delete a
  delivery that another node now holds, nor count it twice. `delivered` always deletes (the
  receiver has it; sending again would only duplicate) and says whether the token was current.
- `add` is idempotent per id (a write retried after a lost answer adds nothing twice) and
  refuses ids beyond `limit` deliveries in the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: records, due. ARGV: limit, then id, record pairs. Returns a 0/1 per pair (1: queued,
# now or by an earlier write of the same id), then the depth.
ADD = (
    _NOW
    + """
local depth = redis.call('ZCARD', KEYS[2])
local out = {}
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    out[#out + 1] = 1
  elseif depth < tonumber(ARGV[1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], now, ARGV[i])
    depth = depth + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
out[#out + 1] = depth
return out
"""
)

# KEYS: records, due, tries, owners, fence. ARGV: how many, lease (ms).
# Returns {{id, record, tries, token, ...}, ms until the next one is due (-1: none), depth}.
CLAIM = (
    _NOW
    + """
local lease = tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  local record = redis.call('HGET', KEYS[1], id)
  if record then
    local token = redis.call('INCR', KEYS[5])
    local tries = redis.call('HINCRBY', KEYS[3], id, 1)
    redis.call('HSET', KEYS[4], id, token)
    redis.call('ZADD', KEYS[2], now + lease, id)
    out[#out + 1] = id
    out[#out + 1] = record
    out[#out + 1] = tries
    out[#out + 1] = token
  else
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  end
end
local wait = -1
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then wait = math.max(0, tonumber(first[2]) - now) end
return {out, wait, redis.call('ZCARD', KEYS[2])}
"""
)

# KEYS: records, due, tries, owners. ARGV: id, token. 1 if the token was current.
DELIVERED = """
local current = redis.call('HGET', KEYS[4], ARGV[1]) == ARGV[2]
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if current then return 1 end
return 0
"""

# KEYS: records, due, tries, owners. ARGV: id, token, delay (ms). 1 if rescheduled.
RESCHEDULE = (
    _NOW
    + """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
)

# KEYS: records, due, tries, owners. ARGV: id, token. 1 if dropped.
DROP = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

# KEYS: records, due, tries, owners. ARGV: id, token. A claim never attempted goes back, due
# now, and its try is not counted. 1 if released.
RELEASE = (
    _NOW
    + """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[2], 'XX', now, ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
return 1
"""
)


@dataclass(slots=True, frozen=True)
class StoredClaim:
    key: str
    record: bytes
    tries: int
    """Attempts claimed so far, this one included."""
    token: int


@dataclass(slots=True, frozen=True)
class ClaimResult:
    claims: list[StoredClaim]
    next_due: float | None
    """Seconds until the next delivery is due, by Redis's clock (None: the queue is empty)."""
    depth: int


class RedisDeliveryStore:
    """The scripts above, bound to one Redis client and key prefix."""

    def __init__(self, redis: Redis | RedisCluster, prefix: str) -> None:
        self.redis = redis
        tag = f"{{{prefix}:webhooks}}"
        self.records = f"{tag}:records"
        self.due = f"{tag}:due"
        self.tries = f"{tag}:tries"
        self.owners = f"{tag}:owners"
        self.fence = f"{tag}:fence"
        self._keys = [self.records, self.due, self.tries, self.owners]
        self._add = redis.register_script(ADD)
        self._claim = redis.register_script(CLAIM)
        self._delivered = redis.register_script(DELIVERED)
        self._reschedule = redis.register_script(RESCHEDULE)
        self._drop = redis.register_script(DROP)
        self._release = redis.register_script(RELEASE)

    async def add(self, items: Sequence[tuple[str, bytes]], limit: int) -> tuple[list[bool], int]:
        """Queue `(id, record)` pairs, due now; which were accepted, and the depth after."""
        args: list[Any] = [limit]
        for key, record in items:
            args += [key, record]
        reply = await self._add(keys=[self.records, self.due], args=args)
        return [bool(flag) for flag in reply[:-1]], int(reply[-1])

    async def claim(self, count: int, lease: float) -> ClaimResult:
        """Take up to `count` due deliveries for `lease` seconds."""
        flat, wait, depth = await self._claim(
            keys=[*self._keys, self.fence], args=[count, max(1, int(lease * 1000))]
        )
        claims = [
            StoredClaim(_text(flat[i]), bytes(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        ]
        return ClaimResult(claims, None if int(wait) < 0 else int(wait) / 1000, int(depth))

    async def delivered(self, key: str, token: int) -> bool:
        return bool(await self._delivered(keys=self._keys, args=[key, token]))

    async def reschedule(self, key: str, token: int, delay: float) -> bool:
        return bool(
            await self._reschedule(keys=self._keys, args=[key, token, max(0, int(delay * 1000))])
        )

    async def drop(self, key: str, token: int) -> bool:
        return bool(await self._drop(keys=self._keys, args=[key, token]))

    async def release(self, key: str, token: int) -> bool:
        return bool(await self._release(keys=self._keys, args=[key, token]))

    async def depth(self) -> int:
        return int(await self.redis.zcard(self.due))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
