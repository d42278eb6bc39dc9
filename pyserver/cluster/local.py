"""The `local` Adapter driver: one process is the whole cluster.

Invariants:
- Subscription counts are kept here, per (app, channel), apart from the registry: the app
  updates its registry around the Adapter call in whichever order suits delivery.
- Presence members are kept per (app, channel) as user id → (first user_info, socket ids);
  a user is a member while at least one of its connections is.
- Signed-in users are kept as (app, user) → socket ids; cache channels' last events with
  their expiry. Expired events are purged whenever the cache has doubled since the last
  purge, so channels triggered once and never read cannot grow memory without bound.
- Pending-leave markers live `local_marker_ttl(leave_delay)` seconds (see `leaves.py`).
- Every coroutine completes without suspending (`completes_synchronously`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pyserver.cluster.adapter import (
    Adapter,
    AppPeer,
    CachedEvent,
    ChannelCounts,
    CountChange,
    LocalFanout,
    PresenceJoin,
    Transition,
)
from pyserver.cluster.leaves import (
    LeaveKey,
    LocalLeaveMarkers,
    PurgeSchedule,
    local_marker_ttl,
)

CACHE_PURGE_MIN = 1_024
"""Cached events kept before the first purge of expired ones (amortised O(1) per put)."""


class _Member:
    __slots__ = ("sockets", "user_info")

    def __init__(self, user_info: Any) -> None:
        self.user_info = user_info
        self.sockets: set[str] = set()


class LocalAdapter(Adapter):
    completes_synchronously = True

    def __init__(self, leave_delay: float = 3.0) -> None:
        self._registries: dict[str, LocalFanout] = {}
        self._peers: dict[str, AppPeer] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._members: dict[tuple[str, str], dict[str, _Member]] = {}
        self._users: dict[tuple[str, str], set[str]] = {}
        self._cache: dict[tuple[str, str], tuple[CachedEvent, float]] = {}
        self._cache_purge = PurgeSchedule(CACHE_PURGE_MIN)
        self.pending = LocalLeaveMarkers(local_marker_ttl(leave_delay))

    def attach(self, app_id: str, registry: LocalFanout, peer: AppPeer) -> None:
        self._registries[app_id] = registry
        self._peers[app_id] = peer

    # --- delivery ------------------------------------------------------------------------

    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        self._registries[app_id].broadcast(channel, frame, except_socket_id)

    def terminate_user(self, app_id: str, user_id: str) -> None:
        self._peers[app_id].terminate_local(user_id)

    def kick(self, app_id: str, channel: str, user_id: str | None, socket_id: str | None) -> None:
        self._peers[app_id].kick_local(channel, user_id, socket_id)

    def announce_user(self, app_id: str, user_id: str, online: bool) -> None:
        self._peers[app_id].user_announced(user_id, online)

    # --- state ---------------------------------------------------------------------------

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        key = (app_id, channel)
        count = self._counts[key] = self._counts.get(key, 0) + 1
        if count != 1:
            return CountChange(count, Transition.NONE)
        return CountChange(count, self._arrival(LeaveKey.for_channel(app_id, channel)))

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        key = (app_id, channel)
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return CountChange(count, Transition.NONE)
        self._counts.pop(key, None)
        self.pending.mark(LeaveKey.for_channel(app_id, channel))
        return CountChange(0, Transition.LEFT)

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        members = self._members.setdefault((app_id, channel), {})
        member = members.get(user_id)
        transition = Transition.NONE
        if member is None:
            member = members[user_id] = _Member(user_info)
            transition = self._arrival(LeaveKey.for_member(app_id, channel, user_id))
        member.sockets.add(socket_id)
        return PresenceJoin(
            transition is not Transition.NONE,
            transition,
            {uid: m.user_info for uid, m in members.items()},
        )

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        members = self._members.get((app_id, channel))
        member = members.get(user_id) if members else None
        if members is None or member is None:
            return False
        member.sockets.discard(socket_id)
        if member.sockets:
            return False
        del members[user_id]
        if not members:
            del self._members[(app_id, channel)]
        self.pending.mark(LeaveKey.for_member(app_id, channel, user_id))
        return True

    async def user_join(self, app_id: str, user_id: str, socket_id: str) -> Transition:
        sockets = self._users.setdefault((app_id, user_id), set())
        sockets.add(socket_id)
        if len(sockets) > 1:
            return Transition.NONE
        return self._arrival(LeaveKey.for_user(app_id, user_id))

    async def user_leave(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users.get((app_id, user_id))
        if sockets is None:
            return False
        sockets.discard(socket_id)
        if sockets:
            return False
        del self._users[(app_id, user_id)]
        self.pending.mark(LeaveKey.for_user(app_id, user_id))
        return True

    async def take_pending_leave(self, key: LeaveKey) -> bool:
        return self.pending.take_now(key)

    def _arrival(self, key: LeaveKey) -> Transition:
        """ARRIVED for a new arrival, RETURNED when it cancels a pending leave."""
        return Transition.RETURNED if self.pending.returned(key) else Transition.ARRIVED

    def cache_put(self, app_id: str, channel: str, event: CachedEvent) -> None:
        now = time.monotonic()
        self._cache[(app_id, channel)] = (event, now + event.ttl)
        if self._cache_purge.due(len(self._cache)):
            self._cache = {k: entry for k, entry in self._cache.items() if entry[1] > now}
            self._cache_purge.swept(len(self._cache))

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        entry = self._cache.get((app_id, channel))
        if entry is None:
            return None
        ttl = entry[1] - time.monotonic()
        if ttl <= 0:
            del self._cache[(app_id, channel)]
            return None
        return CachedEvent(entry[0].payload, entry[0].event, entry[0].data, ttl)

    # --- queries -------------------------------------------------------------------------

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        return {u for u in user_ids if (app_id, u) in self._users}

    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        members = self._members.get((app_id, channel), {})
        return {uid: m.user_info for uid, m in members.items()}

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        return ChannelCounts(
            self._counts.get((app_id, channel), 0),
            len(self._members.get((app_id, channel), ())),
        )

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return {
            name: ChannelCounts(count, len(self._members.get((app, name), ())))
            for (app, name), count in self._counts.items()
            if app == app_id and name.startswith(prefix)
        }
