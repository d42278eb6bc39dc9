"""The Adapter interface: everything that must be true across nodes (design rule 4).

Node-local fan-out tables live in `pyserver.channels.registry`; the Adapter owns the facts a
cluster must agree on: subscription counts and occupied channels, presence members
(deduplicated per user across tabs and nodes, first `user_info` kept), signed-in users, and
delivery of broadcasts and control messages (terminate, kick, watchlist) to every node.

Transitions are decided atomically by the Adapter, so that exactly one node in the cluster
sees each one and webhooks go out once:
- a channel's count going 0 → 1 is `ARRIVED` (occupied), 1 → 0 is `LEFT` (vacated); a
  presence member's and a signed-in user's first and last connection likewise;
- a leave (vacated, member removed, user offline) leaves a *pending-leave marker*; a return
  while the marker lives takes it and reports `RETURNED` instead of a new arrival, and
  `take_pending_leave` at the end of the delay tells the webhook dispatcher whether the
  leave still stands. A page reload sends nothing (the whole machine: `leaves.py`).

Calling contract:
- `publish`, `terminate_user`, `kick` and `announce_user` return at once; a distributed
  driver sends them in the background, and runs the local part at once.
- The `async` methods return cluster-wide answers. A driver whose coroutines never suspend
  sets `completes_synchronously`, which lets callers run them without creating a Task.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pyserver.cluster.leaves import LeaveKey

__all__ = [
    "Adapter",
    "AppPeer",
    "CachedEvent",
    "ChannelCounts",
    "CountChange",
    "LeaveKey",
    "LocalFanout",
    "PresenceJoin",
    "Transition",
]


class Transition(enum.Enum):
    NONE = "none"
    ARRIVED = "arrived"
    LEFT = "left"
    RETURNED = "returned"
    """Came back while the leave was pending: no arrival and no leave is reported."""


@dataclass(frozen=True, slots=True)
class CountChange:
    count: int
    """Cluster-wide subscriptions of the channel after the change."""
    transition: Transition


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    """The result of adding one connection to a presence channel."""

    first_for_user: bool
    """True when this is the user's first connection in the channel: send `member_added`."""
    transition: Transition
    """ARRIVED (first, report it), RETURNED (first, but within a pending leave) or NONE."""
    members: Mapping[str, Any]
    """Every member after the join: user id → the `user_info` kept for that user."""


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last server event of a cache channel (§5.5)."""

    payload: bytes
    """The whole Pusher message, replayed to new subscribers."""
    event: str
    data: str
    ttl: float
    """Seconds it has left to live."""


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscription_count: int
    user_count: int


class LocalFanout(Protocol):
    """What an Adapter needs of an app's node-local fan-out table (`ChannelRegistry`
    satisfies it): write a frame to local subscribers, and count them."""

    @property
    def channels(self) -> Mapping[str, object]:
        """Every channel with at least one local subscriber, by name."""
        ...

    def count(self, name: str) -> int:
        """Local subscribers of `name`."""
        ...

    def broadcast(self, name: str, frame: bytes, except_socket_id: str | None = None) -> int:
        """Write `frame` to every local subscriber of `name` but the excluded one."""
        ...


class AppPeer(Protocol):
    """What an Adapter calls back on the local app when another node asks for it."""

    def terminate_local(self, user_id: str) -> int: ...

    def kick_local(self, channel: str, user_id: str | None, socket_id: str | None) -> None: ...

    def user_announced(self, user_id: str, online: bool) -> None: ...

    # A dead node's state was removed (reaping); each is reported on one node only.
    def remote_member_left(self, channel: str, user_id: str) -> None: ...

    def remote_channel_left(self, channel: str) -> None: ...

    def remote_user_left(self, user_id: str) -> None: ...

    def connection_count(self) -> int:
        """WebSocket connections the app has on this node."""
        ...

    # What this node holds, read by a distributed driver to rebuild its share after an
    # outage (the app owns it; a driver keeps no copy).
    def local_presence(self) -> Iterable[tuple[str, str, str]]:
        """(channel, socket id, user id) of every presence membership on this node."""
        ...

    def local_users(self) -> Iterable[tuple[str, str]]:
        """(user id, socket id) of every signed-in connection on this node."""
        ...


class Adapter(ABC):
    completes_synchronously: bool = False
    healthy: bool = True
    """False while the distributed engine is unreachable (the node serves its own clients)."""

    @abstractmethod
    def attach(self, app_id: str, registry: LocalFanout, peer: AppPeer) -> None:
        """Register an app's local fan-out table and its callbacks."""

    async def start(self) -> None:  # noqa: B027 - optional hook, nothing to do locally
        """Connect to the engine, if any."""

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to do locally
        """Leave the cluster cleanly."""

    def connections_elsewhere(self, app_id: str) -> int:
        """The app's connections on the other nodes, as of their last report (for the
        cluster-wide `max_connections`); a single process has none."""
        return 0

    # --- delivery ------------------------------------------------------------------------

    @abstractmethod
    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        """Write one encoded WebSocket frame to every subscriber of `channel` on every node,
        except the connection `except_socket_id`."""

    @abstractmethod
    def terminate_user(self, app_id: str, user_id: str) -> None:
        """Close every connection signed in as `user_id`, on every node."""

    @abstractmethod
    def kick(self, app_id: str, channel: str, user_id: str | None, socket_id: str | None) -> None:
        """Remove a user's or a socket's subscription to `channel`, on every node."""

    @abstractmethod
    def announce_user(self, app_id: str, user_id: str, online: bool) -> None:
        """Tell every node's watchers that a user came online or went offline."""

    # --- state ---------------------------------------------------------------------------

    @abstractmethod
    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        """A local connection joined `channel` (already in the registry)."""

    @abstractmethod
    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        """A local connection left `channel` (already out of the registry)."""

    @abstractmethod
    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        """Add a connection as member `user_id` of a presence channel."""

    @abstractmethod
    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        """Remove a connection's membership; True when it was the user's last connection
        (a pending-leave marker is then set)."""

    @abstractmethod
    async def user_join(self, app_id: str, user_id: str, socket_id: str) -> Transition:
        """A connection signed in as `user_id`: ARRIVED when the user came online,
        RETURNED when it came back within a pending leave, else NONE."""

    @abstractmethod
    async def user_leave(self, app_id: str, user_id: str, socket_id: str) -> bool:
        """A signed-in connection closed; True when it was the user's last one."""

    @abstractmethod
    async def take_pending_leave(self, key: LeaveKey) -> bool:
        """Remove the pending-leave marker `key`; True when it was still there."""

    @abstractmethod
    def cache_put(self, app_id: str, channel: str, event: CachedEvent) -> None:
        """Remember a cache channel's last server event for `event.ttl` seconds."""

    @abstractmethod
    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        """A cache channel's last server event while it lives."""

    # --- queries -------------------------------------------------------------------------

    @abstractmethod
    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        """Which of `user_ids` have at least one signed-in connection."""

    @abstractmethod
    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        """user id → user_info of every member of a presence channel."""

    @abstractmethod
    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        """Subscriptions and distinct presence users of one channel, cluster-wide."""

    @abstractmethod
    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        """Every channel with at least one subscriber whose name starts with `prefix`."""
