"""The Adapter interface: everything that must be true across nodes (design rule 4).

Node-local fan-out tables live in `pyserver.channels.registry`; the Adapter owns the facts a
cluster must agree on: subscription counts, presence members (deduplicated per user across
tabs and nodes, first `user_info` kept), which channels are occupied, and delivery of a
broadcast to every node. The `local` driver is the one-process truth; a distributed driver
implements the same methods over a shared store.

Calling contract:
- `publish` and the `*subscribed` notifications return at once; a distributed driver does its
  I/O in the background.
- The `async` methods return cluster-wide answers. A driver whose coroutines never suspend
  sets `completes_synchronously`, which lets callers run them without creating a Task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyserver.channels.registry import ChannelRegistry


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """The result of adding one connection to a presence channel."""

    first_for_user: bool
    """True when this is the user's first connection in the channel: send `member_added`."""
    members: Mapping[str, Any]
    """Every member after the join: user id → the `user_info` kept for that user."""


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscription_count: int
    user_count: int


class Adapter(ABC):
    completes_synchronously: bool = False

    @abstractmethod
    def attach(self, app_id: str, registry: ChannelRegistry) -> None:
        """Register the local fan-out table of an app."""

    @abstractmethod
    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        """Deliver one encoded WebSocket frame to every subscriber of `channel` on every node,
        except the connection `except_socket_id`."""

    @abstractmethod
    def subscribed(self, app_id: str, channel: str, socket_id: str) -> int:
        """A local connection joined `channel` (already added to the registry). Returns this
        node's best knowledge of the cluster-wide subscription count after the change."""

    @abstractmethod
    def unsubscribed(self, app_id: str, channel: str, socket_id: str) -> int:
        """A local connection left `channel`. Returns the count after the change."""

    @abstractmethod
    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        """Add a connection as member `user_id` of a presence channel."""

    @abstractmethod
    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        """Remove a connection's membership; True when it was the user's last connection."""

    @abstractmethod
    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        """user id → user_info of every member of a presence channel."""

    @abstractmethod
    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        """Subscriptions and distinct presence users of one channel, cluster-wide."""

    @abstractmethod
    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        """Every channel with at least one subscriber whose name starts with `prefix`."""
