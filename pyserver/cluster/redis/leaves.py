"""Pending-leave markers in Redis: the cluster implementation of `LeaveMarkers`.

The theory, the key and the TTL rule are in `pyserver.cluster.leaves`. Here:
- a marker is the string `P:pending:{kind}:{app}:...` with a TTL, set by the state scripts
  atomically with the leave and taken (deleted) by a return or by `take`;
- `hold` journals a leave whose webhook this node's timer holds, in the sorted set
  `P:leaving:{node}` scored by the marker's expiry, so that the reaper of this node, should
  it die before the timer fires, finds the leave (`orphans`) and re-reports it.

Invariant: while Redis is unreachable `take` answers False, never True: the rebuild reports
each leave of the outage once, and a webhook sent now as well would be its second.
"""

from __future__ import annotations

import time
from typing import cast

import orjson

from pyserver.cluster.leaves import LeaveKey, LeaveMarkers
from pyserver.cluster.recovery import Recovery
from pyserver.cluster.redis.connection import Client
from pyserver.cluster.redis.keys import RedisKeys


class RedisLeaveMarkers(LeaveMarkers):
    def __init__(
        self,
        client: Client,
        keys: RedisKeys,
        node: str,
        ttl_ms: int,
        recovery: Recovery,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.node = node
        self.ttl_ms = ttl_ms
        self.recovery = recovery

    async def take(self, key: LeaveKey) -> bool:
        async def call() -> bool:
            return bool(await self.redis.delete(self.keys.pending(key)))

        return await self.recovery.safely(call, lambda: False)

    async def hold(self, key: LeaveKey) -> None:
        """Journal a leave this node's debounce timer holds (called right after the leave)."""
        journal = self.keys.leaving(self.node)
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(journal, {orjson.dumps(key.parts()): now_ms + self.ttl_ms})
            pipe.zremrangebyscore(journal, "-inf", now_ms)
            pipe.pexpire(journal, self.ttl_ms)
            await pipe.execute()

    async def orphans(self, node: str) -> list[LeaveKey]:
        """The leaves `node` journalled whose markers still stand; the journal is removed.
        Each then goes the way of a local leave: after the delay, if nobody came back."""
        journal = self.keys.leaving(node)
        now_ms = int(time.time() * 1000)
        raw = await self.redis.zrangebyscore(journal, now_ms, "+inf")
        await self.redis.delete(journal)
        found = []
        for item in raw:
            try:
                key = LeaveKey.from_parts(orjson.loads(cast(bytes, item)))
            except ValueError:
                continue
            if await self.redis.exists(self.keys.pending(key)):
                found.append(key)  # else sent by the node before it died, or a return took it
        return found
