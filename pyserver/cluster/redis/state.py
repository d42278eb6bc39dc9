"""Cluster-wide state in Redis: the state half of the Adapter, one Lua script per transition
(`scripts.py`), and the answers from local knowledge while Redis is away.

Invariants:
- Every transition (a count crossing 0, a user's first or last connection) is decided by
  one script, so exactly one node sees it; a node that sees a leave journals it for its
  reaper (`RedisLeaveMarkers.hold`).
- Every call goes through `Recovery.safely`: while Redis is unreachable it answers from
  local knowledge, and the rebuild later makes Redis agree with the node.
- Local knowledge is the apps' own state (their fan-out tables, read through
  `LocalFanout`) plus what they do not hold: per presence member the `user_info` it joined
  with and its number of local connections, and per signed-in user its number of local
  connections. These counts give the fallbacks exactly-once first/last answers; which
  sockets they are is read from the apps when rebuilding (`reaping.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pyserver.cluster.adapter import (
    CachedEvent,
    ChannelCounts,
    CountChange,
    LocalFanout,
    PresenceJoin,
    Transition,
)
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.recovery import Recovery
from pyserver.cluster.redis.connection import Client, text
from pyserver.cluster.redis.keys import RedisKeys, field
from pyserver.cluster.redis.leaves import RedisLeaveMarkers
from pyserver.cluster.redis.scripts import Scripts

log = logging.getLogger("pyserver.cluster.state")

TRANSITIONS = {
    b"none": Transition.NONE,
    b"arrived": Transition.ARRIVED,
    b"left": Transition.LEFT,
    b"returned": Transition.RETURNED,
}


def entry(kind: str, app: str, name: str) -> bytes:
    """A node index entry: which of the node's keys holds a field of it."""
    return orjson.dumps([kind, app, name])


class _Member:
    """One user's presence in one channel on this node."""

    __slots__ = ("info", "local")

    def __init__(self, info: bytes) -> None:
        self.info = info
        self.local = 0


class RedisState:
    def __init__(
        self,
        client: Client,
        keys: RedisKeys,
        scripts: Scripts,
        node: str,
        markers: RedisLeaveMarkers,
        recovery: Recovery,
        fanouts: Mapping[str, LocalFanout],
    ) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts
        self.node = node
        self.markers = markers
        self.recovery = recovery
        self.fanouts = fanouts
        self.members: dict[tuple[str, str], dict[str, _Member]] = {}
        """(app, channel) → user id → the user's presence on this node."""
        self.users: dict[tuple[str, str], int] = {}
        """(app, user) → local signed-in connections."""
        self._debug = False

    def start(self) -> None:
        self._debug = log.isEnabledFor(logging.DEBUG)

    def info_of(self, app: str, channel: str, user: str) -> bytes:
        """The `user_info` JSON a local member joined with (for the rebuild)."""
        member = self.members.get((app, channel), {}).get(user)
        return member.info if member is not None else b"null"

    def _transition(self, what: str, app: str, name: str, transition: Transition) -> None:
        if self._debug and transition is not Transition.NONE:
            log.debug("%s %s/%s: %s", what, app, name, transition.value)

    # --- subscriptions -------------------------------------------------------------------

    async def count(self, app_id: str, channel: str, delta: int) -> CountChange:
        keys = self.keys

        async def call() -> CountChange:
            pending = LeaveKey.for_channel(app_id, channel)
            total, transition = await self.scripts.call(
                "COUNT",
                [
                    keys.subs(app_id, channel),
                    keys.channels(app_id),
                    keys.pending(pending),
                    keys.index(app_id, self.node),
                ],
                [self.node, channel, delta, self.markers.ttl_ms, entry("count", app_id, channel)],
            )
            change = CountChange(int(total), TRANSITIONS[transition])
            if change.transition is Transition.LEFT:
                await self.markers.hold(pending)
            self._transition("channel", app_id, channel, change.transition)
            return change

        return await self.recovery.safely(
            call, lambda: CountChange(self.fanouts[app_id].count(channel), Transition.NONE)
        )

    # --- presence ------------------------------------------------------------------------

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        info = orjson.dumps(user_info)
        members = self.members.setdefault((app_id, channel), {})
        member = members.get(user_id)
        if member is None:
            member = members[user_id] = _Member(info)
        member.local += 1
        keys = self.keys

        async def call() -> PresenceJoin:
            transition, flat = await self.scripts.call(
                "PRESENCE_JOIN",
                [
                    keys.pconns(app_id, channel),
                    keys.pmembers(app_id, channel),
                    keys.pending(LeaveKey.for_member(app_id, channel, user_id)),
                    keys.index(app_id, self.node),
                ],
                [field(self.node, socket_id), user_id, info, entry("presence", app_id, channel)],
            )
            found = {flat[i].decode(): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
            state = TRANSITIONS[transition]
            self._transition(f"member {user_id} of", app_id, channel, state)
            return PresenceJoin(state is not Transition.NONE, state, found)

        def local() -> PresenceJoin:
            found = {uid: orjson.loads(m.info) for uid, m in members.items()}
            return PresenceJoin(member.local == 1, Transition.NONE, found)

        return await self.recovery.safely(call, local)

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        members = self.members.get((app_id, channel), {})
        member = members.get(user_id)
        last_here = True
        if member is not None:
            member.local -= 1
            last_here = member.local <= 0
            if last_here:
                del members[user_id]
                if not members:
                    self.members.pop((app_id, channel), None)
        keys = self.keys

        async def call() -> bool:
            pending = LeaveKey.for_member(app_id, channel, user_id)
            last = await self.scripts.call(
                "PRESENCE_LEAVE",
                [
                    keys.pconns(app_id, channel),
                    keys.pmembers(app_id, channel),
                    keys.pending(pending),
                ],
                [field(self.node, socket_id), user_id, self.markers.ttl_ms],
            )
            if last:
                await self.markers.hold(pending)
                self._transition(f"member {user_id} of", app_id, channel, Transition.LEFT)
            return bool(last)

        return await self.recovery.safely(call, lambda: last_here)

    # --- signed-in users -----------------------------------------------------------------

    async def user_join(self, app_id: str, user_id: str, socket_id: str) -> Transition:
        local = self.users[(app_id, user_id)] = self.users.get((app_id, user_id), 0) + 1
        keys = self.keys

        async def call() -> Transition:
            transition = await self.scripts.call(
                "USER_JOIN",
                [
                    keys.user(app_id, user_id),
                    keys.pending(LeaveKey.for_user(app_id, user_id)),
                    keys.index(app_id, self.node),
                ],
                [field(self.node, socket_id), entry("user", app_id, user_id)],
            )
            state = TRANSITIONS[transition]
            self._transition("user", app_id, user_id, state)
            return state

        return await self.recovery.safely(
            call, lambda: Transition.ARRIVED if local == 1 else Transition.NONE
        )

    async def user_leave(self, app_id: str, user_id: str, socket_id: str) -> bool:
        local = self.users.get((app_id, user_id), 0) - 1
        if local > 0:
            self.users[(app_id, user_id)] = local
        else:
            self.users.pop((app_id, user_id), None)
        keys = self.keys

        async def call() -> bool:
            pending = LeaveKey.for_user(app_id, user_id)
            last = await self.scripts.call(
                "USER_LEAVE",
                [keys.user(app_id, user_id), keys.pending(pending)],
                [field(self.node, socket_id), self.markers.ttl_ms],
            )
            if last:
                await self.markers.hold(pending)
                self._transition("user", app_id, user_id, Transition.LEFT)
            return bool(last)

        return await self.recovery.safely(call, lambda: local <= 0)

    # --- cache channels ------------------------------------------------------------------

    async def cache_put(self, app_id: str, channel: str, event: CachedEvent) -> None:
        value = orjson.dumps([event.payload.decode(), event.event, event.data])
        key = self.keys.cache(app_id, channel)

        async def put() -> None:
            await self.redis.set(key, value, px=int(event.ttl * 1000))

        await self.recovery.safely(put, lambda: None)

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        key = self.keys.cache(app_id, channel)

        async def call() -> CachedEvent | None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, ttl_ms = await pipe.execute()
            if raw is None or ttl_ms <= 0:
                return None
            payload, event, data = orjson.loads(raw)
            return CachedEvent(payload.encode(), event, data, ttl_ms / 1000)

        return await self.recovery.safely(call, lambda: None)

    # --- queries -------------------------------------------------------------------------

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        ids = list(user_ids)

        async def call() -> set[str]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.exists(self.keys.user(app_id, user_id))
                found = await pipe.execute()
            return {u for u, present in zip(ids, found, strict=True) if present}

        return await self.recovery.safely(
            call, lambda: {u for u in ids if (app_id, u) in self.users}
        )

    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        async def call() -> Mapping[str, Any]:
            raw = await self.redis.hgetall(self.keys.pmembers(app_id, channel))
            return {text(k): orjson.loads(v) for k, v in raw.items()}

        def local() -> Mapping[str, Any]:
            members = self.members.get((app_id, channel), {})
            return {uid: orjson.loads(m.info) for uid, m in members.items()}

        return await self.recovery.safely(call, local)

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        async def call() -> ChannelCounts:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hvals(self.keys.subs(app_id, channel))
                pipe.hlen(self.keys.pmembers(app_id, channel))
                counts, users = await pipe.execute()
            return ChannelCounts(sum(int(c) for c in counts), int(users))

        def local() -> ChannelCounts:
            users = len(self.members.get((app_id, channel), ()))
            return ChannelCounts(self.fanouts[app_id].count(channel), users)

        return await self.recovery.safely(call, local)

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        keys = self.keys

        async def call() -> dict[str, ChannelCounts]:
            names = sorted(
                n
                for n in (text(m) for m in await self.redis.smembers(keys.channels(app_id)))
                if n.startswith(prefix)
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hvals(keys.subs(app_id, name))
                    pipe.hlen(keys.pmembers(app_id, name))
                found = await pipe.execute()
            result = {}
            for i, name in enumerate(names):
                total = sum(int(c) for c in found[2 * i])
                if total:
                    result[name] = ChannelCounts(total, int(found[2 * i + 1]))
            return result

        def local() -> dict[str, ChannelCounts]:
            fanout = self.fanouts[app_id]
            return {
                name: ChannelCounts(fanout.count(name), 0)
                for name in fanout.channels
                if name.startswith(prefix)
            }

        return await self.recovery.safely(call, local)
