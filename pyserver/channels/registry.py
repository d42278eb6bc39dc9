"""Node-local channel state of one app: which local connections are subscribed where.

This is the fan-out table of the hot path. A broadcast arrives as one already-built
WebSocket frame (`bytes`) and is written to every local subscriber; nothing is parsed or
encoded per recipient.

Invariants:
- A channel exists here only while it has at least one local subscriber.
- `subscribers` keeps subscription order (a dict used as an ordered set).
- Cluster-wide facts (counts on other nodes, presence members) are not kept here; they go
  through the Adapter (`pyserver.cluster`).
"""

from __future__ import annotations

from typing import Protocol

from pyserver.protocol.names import ChannelType, channel_type
from pyserver.stats import AppStats


class Socket(Protocol):
    """What a channel needs of a connection."""

    socket_id: str

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame for this connection."""


class LocalChannel:
    __slots__ = ("name", "subscribers", "type")

    def __init__(self, name: str) -> None:
        self.name = name
        self.type: ChannelType = channel_type(name)
        self.subscribers: dict[Socket, None] = {}


class ChannelRegistry:
    """The local channels of one app."""

    __slots__ = ("channels", "stats")

    def __init__(self, stats: AppStats | None = None) -> None:
        self.channels: dict[str, LocalChannel] = {}
        self.stats = stats or AppStats()

    def add(self, name: str, socket: Socket) -> bool:
        """Subscribe `socket`; True when it was not subscribed yet."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = LocalChannel(name)
        if socket in channel.subscribers:
            return False
        channel.subscribers[socket] = None
        return True

    def remove(self, name: str, socket: Socket) -> bool:
        """Unsubscribe `socket`; True when it was subscribed."""
        channel = self.channels.get(name)
        if channel is None or socket not in channel.subscribers:
            return False
        del channel.subscribers[socket]
        if not channel.subscribers:
            del self.channels[name]
        return True

    def count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.subscribers) if channel is not None else 0

    def subscribers(self, name: str) -> list[Socket]:
        channel = self.channels.get(name)
        return list(channel.subscribers) if channel is not None else []

    def broadcast(self, name: str, frame: bytes, except_socket_id: str | None = None) -> int:
        """Write `frame` to every local subscriber of `name` but the excluded one.

        Returns how many connections were written to.
        """
        channel = self.channels.get(name)
        if channel is None:
            return 0
        subscribers = channel.subscribers
        if except_socket_id is None:
            for socket in subscribers:
                socket.send(frame)
            sent = len(subscribers)
        else:
            sent = 0
            for socket in subscribers:
                if socket.socket_id != except_socket_id:
                    socket.send(frame)
                    sent += 1
        stats = self.stats
        stats.ws_messages_sent_total += sent
        stats.socket_transmitted_bytes += sent * len(frame)
        return sent
