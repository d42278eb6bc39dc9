"""The `local` Adapter driver: one process is the whole cluster.

Invariants:
- Subscription counts are the local registry's counts; nothing is stored twice.
- Presence members are kept per (app, channel) as user id → (first user_info, socket ids);
  a user is a member while at least one of its connections is.
- Every coroutine completes without suspending (`completes_synchronously`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyserver.channels.registry import ChannelRegistry
from pyserver.cluster.adapter import Adapter, ChannelCounts, PresenceJoin


class _Member:
    __slots__ = ("sockets", "user_info")

    def __init__(self, user_info: Any) -> None:
        self.user_info = user_info
        self.sockets: set[str] = set()


class LocalAdapter(Adapter):
    completes_synchronously = True

    def __init__(self) -> None:
        self._registries: dict[str, ChannelRegistry] = {}
        self._members: dict[tuple[str, str], dict[str, _Member]] = {}

    def attach(self, app_id: str, registry: ChannelRegistry) -> None:
        self._registries[app_id] = registry

    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        self._registries[app_id].broadcast(channel, frame, except_socket_id)

    def subscribed(self, app_id: str, channel: str, socket_id: str) -> int:
        return self._registries[app_id].count(channel)

    def unsubscribed(self, app_id: str, channel: str, socket_id: str) -> int:
        return self._registries[app_id].count(channel)

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        members = self._members.setdefault((app_id, channel), {})
        member = members.get(user_id)
        first = member is None
        if member is None:
            member = members[user_id] = _Member(user_info)
        member.sockets.add(socket_id)
        return PresenceJoin(first, {uid: m.user_info for uid, m in members.items()})

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
        return True

    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        members = self._members.get((app_id, channel), {})
        return {uid: m.user_info for uid, m in members.items()}

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        return ChannelCounts(
            self._registries[app_id].count(channel),
            len(self._members.get((app_id, channel), ())),
        )

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        registry = self._registries[app_id]
        return {
            name: ChannelCounts(
                len(channel.subscribers), len(self._members.get((app_id, name), ()))
            )
            for name, channel in registry.channels.items()
            if name.startswith(prefix)
        }
